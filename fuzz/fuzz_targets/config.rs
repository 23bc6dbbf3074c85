//! The config loader: any text gives a config or problems, never a panic;
//! problems each say what is wrong and point inside the text; the same
//! text always gives the same answer.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use authgate::Config;
use libfuzzer_sys::fuzz_target;

/// A folder with the files a config names (certificate and key), so that
/// valid seeds reach every check.
fn folder() -> &'static PathBuf {
    static FOLDER: OnceLock<PathBuf> = OnceLock::new();
    FOLDER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::copy(fixtures.join("ec.crt"), dir.join("certs/gateway.crt")).unwrap();
        std::fs::copy(fixtures.join("ec-pkcs8.key"), dir.join("certs/gateway.key")).unwrap();
        dir
    })
}

fn answer(text: &str) -> Result<(), Vec<String>> {
    Config::parse(text, &folder().join("gateway.toml"))
        .map(|_| ())
        .map_err(|e| e.problems.iter().map(ToString::to_string).collect())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = folder().join("gateway.toml");
    let first = Config::parse(text, &path);
    if let Err(error) = &first {
        assert!(!error.problems.is_empty(), "refused without a problem");
        let lines = text.lines().count().max(1) + 1;
        for problem in &error.problems {
            assert!(!problem.message.trim().is_empty(), "{problem}");
            // Problems of a file it names (the users file) point there.
            if problem.file != path.display().to_string() {
                continue;
            }
            if let Some((line, column)) = problem.position {
                assert!(
                    line >= 1 && line <= lines,
                    "{problem}: the text has {lines} lines"
                );
                assert!(column >= 1, "{problem}");
            }
        }
    }
    let first = first
        .map(|_| ())
        .map_err(|e| e.problems.iter().map(ToString::to_string).collect());
    assert_eq!(first, answer(text), "the same text, another answer");
});
