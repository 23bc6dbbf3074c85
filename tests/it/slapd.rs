//! A real OpenLDAP `slapd` (Debian's package; `.ci/run` installs it) for
//! the `[ldap]` tests: its own folder, config and data, on free loopback
//! ports for `ldap://` (StartTLS) and `ldaps://`, with a test certificate.
//! Without slapd the tests fail, never skip.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "directory-admin-pw";
pub const SEARCH_DN: &str = "cn=authgate,ou=services,dc=example,dc=org";
pub const SEARCH_PASSWORD: &str = "search-account-pw";
pub const CAROL_PASSWORD: &str = "carol-directory-pw";
pub const DAVE_PASSWORD: &str = "dave-directory-pw";

/// Where slapd and its tools are on Debian.
const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";

/// Attributes of Active Directory that OpenLDAP lacks, so that the
/// `active_directory` preset meets the names it expects.
const AD_SCHEMA: &str = "
attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.2 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.3 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.55555.1.4 NAME 'memberOf' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'user' SUP inetOrgPerson STRUCTURAL MAY ( sAMAccountName $ userPrincipalName $ userAccountControl $ memberOf ) )
";

/// The people and groups every test starts with: carol (in `admins`),
/// dave (in `staff`), jane (whose DN has an escaped comma), a search
/// account, and two entries with the uid `eve` (so that `eve` is ambiguous).
pub fn people() -> String {
    format!(
        "dn: {BASE}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{BASE}
objectClass: organizationalUnit
ou: services

dn: {SEARCH_DN}
objectClass: person
cn: authgate
sn: service
userPassword: {SEARCH_PASSWORD}

dn: uid=carol,ou=people,{BASE}
objectClass: user
uid: carol
cn: Carol Jones
sn: Jones
mail: carol@example.org
userPassword: {CAROL_PASSWORD}
sAMAccountName: carol
userPrincipalName: carol@corp.example.org
userAccountControl: 512
memberOf: cn=admins,ou=groups,{BASE}

dn: uid=dave,ou=people,{BASE}
objectClass: user
uid: dave
cn: Dave Smith
sn: Smith
mail: dave@example.org
userPassword: {DAVE_PASSWORD}
sAMAccountName: dave
userAccountControl: 514
memberOf: cn=staff,ou=groups,{BASE}

dn: cn=Doe\\, Jane,ou=people,{BASE}
objectClass: inetOrgPerson
uid: jane
cn: Doe, Jane
sn: Doe
userPassword: jane-directory-pw

dn: uid=eve,ou=people,{BASE}
objectClass: inetOrgPerson
uid: eve
cn: Eve
sn: E
userPassword: eve-directory-pw

dn: cn=Eve Other,ou=people,{BASE}
objectClass: inetOrgPerson
uid: eve
cn: Eve Other
sn: Other
userPassword: eve-directory-pw

dn: cn=admins,ou=groups,{BASE}
objectClass: groupOfNames
cn: admins
member: uid=carol,ou=people,{BASE}
member: cn=Doe\\, Jane,ou=people,{BASE}

dn: cn=staff,ou=groups,{BASE}
objectClass: groupOfNames
cn: staff
member: uid=dave,ou=people,{BASE}
member: uid=carol,ou=people,{BASE}
"
    )
}

/// A loopback port nothing listens on now (slapd cannot be told to take port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    pub cert_pem: String,
}

impl Slapd {
    pub fn start() -> Slapd {
        Slapd::with_data(&people())
    }

    /// A slapd holding `ldif` (its base entries included).
    pub fn with_data(ldif: &str) -> Slapd {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} is missing: these tests need a real OpenLDAP; install it with `apt-get install slapd ldap-utils` (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let cert = authgate::tls::self_signed();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("server.pem"), &cert.cert_pem).unwrap();
        std::fs::write(path("server.key"), &cert.key_pem).unwrap();
        std::fs::write(path("ad.schema"), AD_SCHEMA).unwrap();
        std::fs::create_dir(path("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {schema}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {pid}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
# A lax directory: a DN without a password binds (unauthenticated).
allow bind_anon_dn
database mdb
maxsize 268435456
suffix \"{BASE}\"
rootdn \"{ADMIN_DN}\"
rootpw {ADMIN_PASSWORD}
directory {db}
# Indexed as a directory in use is (the recheck searches by name, groups by member).
index objectClass eq
index uid eq
index member eq
index sAMAccountName eq
index userPrincipalName eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
",
            schema = path("ad.schema").display(),
            pid = path("slapd.pid").display(),
            cert = path("server.pem").display(),
            key = path("server.key").display(),
            db = path("db").display(),
        );
        std::fs::write(path("slapd.conf"), conf).unwrap();
        std::fs::write(path("data.ldif"), ldif).unwrap();
        let added = Command::new(SLAPADD)
            .arg("-f")
            .arg(path("slapd.conf"))
            .arg("-l")
            .arg(path("data.ldif"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SLAPADD}: {e}"));
        assert!(
            added.status.success(),
            "slapadd refused the test data: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let mut slapd = Slapd {
            child: None,
            dir,
            ldap_port: 0,
            ldaps_port: 0,
            cert_pem: cert.cert_pem,
        };
        slapd.run();
        slapd
    }

    fn run(&mut self) {
        for _ in 0..5 {
            self.ldap_port = free_port();
            self.ldaps_port = free_port();
            let child = Command::new(SLAPD)
                .arg("-f")
                .arg(self.dir.path().join("slapd.conf"))
                .arg("-h")
                .arg(format!(
                    "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                    self.ldap_port, self.ldaps_port
                ))
                .args(["-d", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SLAPD}: {e}"));
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let up = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                if up(self.ldap_port) && up(self.ldaps_port) {
                    return;
                }
                if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                    break; // A port was taken meanwhile: another pair.
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.stop();
        }
        panic!("slapd did not come up");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`-STOP`, `-CONT`) to slapd.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// Writes the CA and the search account's password into `dir`, and
    /// returns an `[ldap]` section for `url` naming them, with `extra` lines.
    pub fn section(&self, dir: &Path, url: &str, extra: &str) -> String {
        let ca = dir.join("directory-ca.pem");
        let secret = dir.join("directory-bind-password");
        std::fs::write(&ca, &self.cert_pem).unwrap();
        std::fs::write(&secret, SEARCH_PASSWORD).unwrap();
        format!(
            "[ldap]\nurl = \"{url}\"\nca = \"{}\"\nbind_dn = \"{SEARCH_DN}\"\nbind_password_file = \"{}\"\nuser_base = \"ou=people,{BASE}\"\n{extra}\n",
            ca.display(),
            secret.display()
        )
    }

    /// Applies `change` to `dn` as the directory's administrator.
    pub async fn modify(&self, dn: &str, change: ldap3::Mod<&str>) {
        let mut ldap = self.admin().await;
        ldap.modify(dn, vec![change])
            .await
            .unwrap()
            .success()
            .unwrap();
    }

    /// Deletes `dn` as the directory's administrator.
    pub async fn delete(&self, dn: &str) {
        let mut ldap = self.admin().await;
        ldap.delete(dn).await.unwrap().success().unwrap();
    }

    /// A connection bound as the directory's administrator.
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&self.ldap_url()).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ADMIN_DN, ADMIN_PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
