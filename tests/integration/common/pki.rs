//! Test certificates made with the `openssl` CLI: a throwaway CA and
//! certificates it signs, for the TLS tests (a private forge CA, mutual TLS
//! to a node daemon).

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    super::require_program("openssl", "apt-get install openssl");
    super::run_ok(Command::new("openssl").args(args).current_dir(dir));
}

/// A new CA `{name}-ca.pem` / `{name}-ca.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=test CA {name}"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

/// A key `{name}.key` and certificate `{name}.pem` signed by `{ca}-ca`,
/// with the given X.509 v3 extensions.
pub fn make_cert(dir: &Path, ca: &str, name: &str, extensions: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}
