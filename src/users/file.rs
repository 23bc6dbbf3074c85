//! Changing the users file safely.
//!
//! Every change is read-modify-write under an exclusive lock (a `.lock`
//! file beside it, so the lock survives the rename), edited with toml_edit
//! so comments and layout stay, validated as a whole before anything is
//! written (a change never leaves a file the gateway would refuse), written
//! to a temporary file in the same folder, fsynced, and renamed over the
//! old one, after which the folder is fsynced too. A crash at any moment
//! leaves the old file or the new one, never a torn one.
//!
//! Before the rename the writer notes in the lock file who made the change
//! and the new content's SHA-256, so that a running gateway that sees the
//! change can say who made it (the CLI, or else a hand edit).

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml_edit::DocumentMut;

use super::change::edit;
pub use super::change::{
    check_new_password, check_role, Change, UserFileError, MIN_PASSWORD_CHARS,
};
use super::Users;

/// Set to a number of milliseconds, a writer pauses after its temporary
/// file is complete and before the rename: the window in which the
/// crash-safety test kills it.
pub const PAUSE_BEFORE_RENAME_ENV: &str = "AUTHGATE_TEST_PAUSE_BEFORE_RENAME_MS";

#[derive(Debug, Clone)]
pub struct UsersFile {
    path: PathBuf,
    /// SHA-256 of the content whose users are in force in this process:
    /// what the watcher last handed over, or what this process last wrote.
    /// Shared by clones, so that the watcher compares the file with the
    /// users in force rather than with the last text it happened to see
    /// (a change made here and undone elsewhere between two looks would
    /// otherwise go unnoticed).
    in_force: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// The note a writer leaves in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastChange {
    pub actor: String,
    pub sha256: String,
}

pub fn sha256_hex(text: &str) -> String {
    crate::hex(&Sha256::digest(text.as_bytes()))
}

impl UsersFile {
    pub fn new(path: impl Into<PathBuf>) -> UsersFile {
        UsersFile {
            path: path.into(),
            in_force: Default::default(),
        }
    }

    /// Whether `text` is the content whose users are in force.
    pub fn is_in_force(&self, text: &str) -> bool {
        let digest = sha256_hex(text);
        self.in_force
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(digest.as_str())
    }

    /// Notes `text` as the content whose users are in force.
    pub fn put_in_force(&self, text: &str) {
        *self.in_force.lock().unwrap_or_else(|e| e.into_inner()) = Some(sha256_hex(text));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    fn io(&self, doing: &'static str) -> impl FnOnce(std::io::Error) -> UserFileError + '_ {
        move |error| UserFileError::Io {
            path: self.path.clone(),
            doing,
            error,
        }
    }

    /// Reads and validates the file as it is now.
    pub fn load(&self) -> Result<(String, Users), UserFileError> {
        let text = fs::read_to_string(&self.path).map_err(self.io("read"))?;
        let users =
            Users::parse(&text, &self.path).map_err(|e| UserFileError::Invalid(e.to_string()))?;
        Ok((text, users))
    }

    /// The note of the last change made through [`UsersFile::apply`].
    pub fn last_change(&self) -> Option<LastChange> {
        let text = fs::read_to_string(self.lock_path()).ok()?;
        let mut lines = text.lines();
        Some(LastChange {
            actor: lines.next()?.to_owned(),
            sha256: lines.next()?.to_owned(),
        })
    }

    /// Applies `change` (made by `actor`, for the record) and returns the
    /// users as the file now has them.
    /// Whether this process may rewrite the users file: `Err` says why not.
    /// A file with no write bit for anyone is taken as read-only by
    /// intent (a Kubernetes Secret is mounted so), even for root; else a
    /// temporary file is made and removed in its folder, where the lock
    /// file and each rewrite's temporary file go.
    pub fn writable(&self) -> Result<(), UserFileError> {
        use std::os::unix::fs::PermissionsExt;
        let read_only = |why: String| UserFileError::ReadOnly {
            path: self.path.clone(),
            why,
        };
        if let Ok(meta) = fs::metadata(&self.path) {
            let mode = meta.permissions().mode();
            if mode & 0o222 == 0 {
                return Err(read_only(format!("mode {:04o}", mode & 0o7777)));
            }
        }
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        tempfile::NamedTempFile::new_in(dir)
            .map(drop)
            .map_err(|e| read_only(format!("its folder {}: {e}", dir.display())))
    }

    pub fn apply(&self, change: &Change, actor: &str) -> Result<Users, UserFileError> {
        self.writable()?;
        let lock = open_lock(&self.lock_path()).map_err(self.io("locked"))?;
        lock.lock().map_err(self.io("locked"))?;

        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            // Adding the first user creates the file.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && matches!(change, Change::Add { .. }) =>
            {
                String::new()
            }
            Err(e) => return Err(self.io("read")(e)),
        };
        let mut document: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| UserFileError::Invalid(e.to_string()))?;
        edit(&mut document, change)?;
        let new_text = document.to_string();
        let users = Users::parse(&new_text, &self.path)
            .map_err(|e| UserFileError::Invalid(e.to_string()))?;

        // The note goes first: a watcher that sees the new file must find it.
        // Should the rename then fail, the note names content that never
        // appears, and is ignored.
        let mut note = lock;
        let record = format!("{actor}\n{}\n", sha256_hex(&new_text));
        let _ = note.set_len(0);
        let _ = note.rewind();
        let _ = note.write_all(record.as_bytes());
        self.write_atomically(&new_text)?;
        self.put_in_force(&new_text);
        // Unlocked when `note` is dropped.
        Ok(users)
    }

    /// Writes `text` to a new file beside the old one and renames it over.
    /// The new file has an unpredictable name, is created exclusively and
    /// never through a symlink (another local user cannot make the gateway
    /// write elsewhere), and gets the old file's owner and mode, so that a
    /// change made as root (`sudo authgate user lock bob`) leaves a file
    /// the gateway can still read.
    fn write_atomically(&self, text: &str) -> Result<(), UserFileError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let previous = fs::metadata(&self.path).ok();
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(self.path.file_name().unwrap_or_default());
        temp_name.push(format!(".tmp-{}", random_suffix()));
        let temp = dir.join(temp_name);
        let result = (|| {
            let mut file = create_private(&temp).map_err(self.io("written"))?;
            if let Some(previous) = &previous {
                keep_owner_and_mode(&file, previous).map_err(self.io("written"))?;
            }
            file.write_all(text.as_bytes())
                .map_err(self.io("written"))?;
            file.sync_all().map_err(self.io("written"))?;
            drop(file);
            if let Some(ms) = std::env::var(PAUSE_BEFORE_RENAME_ENV)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            fs::rename(&temp, &self.path).map_err(self.io("replaced"))?;
            // Make the rename itself durable.
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Options for a file only this user may read (0600), opened never
/// through a symlink and not inherited by child processes.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    options
}

/// The lock file: private to the user (it records who changed what).
fn open_lock(path: &Path) -> std::io::Result<File> {
    private_options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// 64 random bits, hex: a temporary name no one can guess ahead.
fn random_suffix() -> String {
    use rand::TryRngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    crate::hex(&bytes)
}

/// A new file only this user can read, created exclusively: it fails if
/// anything (a symlink included) already has the name.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    private_options().write(true).create_new(true).open(path)
}

/// Gives `file` the owner, group and mode of `previous`. Only root may
/// give a file away; anyone else keeps what they can (the group and mode,
/// when they own the old file too).
#[cfg(unix)]
fn keep_owner_and_mode(file: &File, previous: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (uid, gid) = (previous.uid(), previous.gid());
    if std::os::unix::fs::fchown(file, Some(uid), Some(gid)).is_err() {
        let _ = std::os::unix::fs::fchown(file, None, Some(gid));
    }
    file.set_permissions(fs::Permissions::from_mode(previous.mode() & 0o7777))
}

#[cfg(not(unix))]
fn keep_owner_and_mode(file: &File, previous: &fs::Metadata) -> std::io::Result<()> {
    file.set_permissions(previous.permissions())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";
    const OTHER: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0c2FsdA$0Wd3o6T3ooE7kQ2oxLMhxfC8EBDqBb7DTKcWrMCsHrg";

    fn file_with(text: &str) -> (tempfile::TempDir, UsersFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        fs::write(&path, text).unwrap();
        (dir, UsersFile::new(path))
    }

    #[test]
    fn a_second_factor_is_enrolled_used_and_reset() {
        let (_dir, file) = file_with(&format!(
            "[users.alice]\npassword = \"{HASH}\"\nroles = [\"admin\"]\n"
        ));
        let secret = crate::users::TotpSecret::new(crate::users::totp::new_secret());
        let (codes, hashes) = crate::users::totp::new_recovery_codes();
        let users = file
            .apply(
                &Change::SetTotp {
                    name: "Alice".into(),
                    secret: secret.clone(),
                    recovery_codes: hashes.clone(),
                    provider: None,
                },
                "test",
            )
            .unwrap();
        let alice = users.get("alice").unwrap();
        assert_eq!(alice.totp.as_ref(), Some(&secret));
        assert_eq!(alice.recovery_codes, hashes);
        // The secret is in the file, never in a Debug print.
        assert!(!format!("{alice:?}").contains(secret.expose()));
        let used = Change::UseRecoveryCode {
            name: "alice".into(),
            hash: crate::users::totp::recovery_hash(&codes[3]),
        };
        let users = file.apply(&used, "test").unwrap();
        assert_eq!(users.get("alice").unwrap().recovery_codes.len(), 9);
        assert!(matches!(
            file.apply(&used, "test"),
            Err(UserFileError::UnknownRecoveryCode)
        ));
        let users = file
            .apply(&Change::ResetTotp("alice".into()), "test")
            .unwrap();
        let alice = users.get("alice").unwrap();
        assert!(alice.totp.is_none() && alice.recovery_codes.is_empty());
        let text = fs::read_to_string(file.path()).unwrap();
        assert!(
            !text.contains("totp") && !text.contains("recovery"),
            "{text}"
        );
    }

    #[test]
    fn changes_keep_comments_and_layout() {
        let original = format!(
            "# Our accounts. Ask Dana before adding one.\n\n[users.Alice]   # the boss\npassword = \"{HASH}\"\nroles = [\"admin\"]\n"
        );
        let (_dir, file) = file_with(&original);
        let users = file
            .apply(
                &Change::SetRoles {
                    name: "alice".into(),
                    roles: vec!["admin".into(), "ops".into()],
                },
                "test",
            )
            .unwrap();
        assert_eq!(users.get("alice").unwrap().roles, ["admin", "ops"]);
        file.apply(&Change::Lock("ALICE".into()), "test").unwrap();
        file.apply(
            &Change::Add {
                name: "bob".into(),
                password_hash: OTHER.into(),
                roles: vec!["user".into()],
                service: false,
            },
            "test",
        )
        .unwrap();
        let text = fs::read_to_string(file.path()).unwrap();
        assert!(
            text.starts_with(
                "# Our accounts. Ask Dana before adding one.\n\n[users.Alice]   # the boss\n"
            ),
            "{text}"
        );
        assert!(text.contains("roles = [\"admin\", \"ops\"]"));
        assert!(text.contains("locked = true"));
        assert!(text.contains("[users.bob]"));
        let users = file.apply(&Change::Unlock("alice".into()), "test").unwrap();
        assert!(!users.get("alice").unwrap().locked);
        let users = file.apply(&Change::Delete("Bob".into()), "test").unwrap();
        assert!(users.get("bob").is_none());
        assert_eq!(file.last_change().unwrap().actor, "test");
        assert_eq!(
            file.last_change().unwrap().sha256,
            sha256_hex(&fs::read_to_string(file.path()).unwrap())
        );
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let original = format!("[users.alice]\npassword = \"{HASH}\"\nroles = [\"admin\"]\n");
        let (_dir, file) = file_with(&original);
        let add_alice = Change::Add {
            name: " Alice".into(),
            password_hash: OTHER.into(),
            roles: vec![],
            service: false,
        };
        assert!(matches!(
            file.apply(&add_alice, "t"),
            Err(UserFileError::Duplicate(_))
        ));
        assert!(matches!(
            file.apply(&Change::Lock("zed".into()), "t"),
            Err(UserFileError::UnknownUser(_))
        ));
        let bad_role = Change::SetRoles {
            name: "alice".into(),
            roles: vec!["a,b".into()],
        };
        assert!(matches!(
            file.apply(&bad_role, "t"),
            Err(UserFileError::BadRole(_))
        ));
        let plaintext = Change::SetPassword {
            name: "alice".into(),
            password_hash: "hunter2".into(),
        };
        assert!(matches!(
            file.apply(&plaintext, "t"),
            Err(UserFileError::Invalid(_))
        ));
        assert_eq!(fs::read_to_string(file.path()).unwrap(), original);
        assert!(check_new_password("short pass!").is_err());
        assert!(check_new_password("twelve chars").is_ok());
        assert!(
            check_new_password("ünïcödé-ünï").is_err(),
            "11 characters, more bytes"
        );
    }

    #[test]
    fn the_first_user_creates_the_file_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let file = UsersFile::new(dir.path().join("users.toml"));
        let add = Change::Add {
            name: "root".into(),
            password_hash: HASH.into(),
            roles: vec!["admin".into()],
            service: false,
        };
        assert_eq!(file.apply(&add, "t").unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[cfg(unix)]
    #[test]
    fn rewrites_keep_owner_and_mode_and_never_follow_a_planted_symlink() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let original = format!("[users.alice]\npassword = \"{HASH}\"\nroles = [\"admin\"]\n");
        let (dir, file) = file_with(&original);
        fs::set_permissions(file.path(), fs::Permissions::from_mode(0o640)).unwrap();
        // Owned by another account, as when the gateway runs as its own user
        // and an admin edits with sudo. Only root can arrange that.
        let other = 4321;
        let root = std::os::unix::fs::chown(file.path(), Some(other), Some(other)).is_ok();
        if !root {
            eprintln!("not root: checking that the mode is kept, not the owner");
        }
        let before = fs::metadata(file.path()).unwrap();

        // Another local user plants symlinks where a predictable temporary
        // name would be, pointing at a file they want overwritten.
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        for name in [
            format!(".users.toml.tmp-{}", std::process::id()),
            ".users.toml.tmp".to_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }

        file.apply(&Change::Lock("alice".into()), "test").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let after = fs::symlink_metadata(file.path()).unwrap();
        assert!(
            after.file_type().is_file(),
            "the users file is a plain file"
        );
        assert!(fs::read_to_string(file.path())
            .unwrap()
            .contains("locked = true"));
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        if root {
            assert_eq!(after.uid(), other);
        }
        let lock = fs::metadata(dir.path().join("users.toml.lock")).unwrap();
        assert_eq!(lock.mode() & 0o777, 0o600, "the lock file is private");
    }
}
