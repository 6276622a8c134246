//! The static musl forgexec: really static (no ELF interpreter, no needed
//! shared libraries), small, and runs where nothing else exists: in a chroot
//! holding only the binary, and in a Docker image imported from that root.

use crate::common;

use std::path::Path;
use std::process::Command;

const MAX_BYTES: u64 = 6 * 1024 * 1024;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// (program header types, number of DT_NEEDED entries) of an ELF64 LE file.
fn elf_facts(bytes: &[u8]) -> (Vec<u32>, usize) {
    assert!(bytes.len() > 64, "too short for an ELF header");
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not ELF64");
    assert_eq!(bytes[5], 1, "not little-endian");
    assert_eq!(u16_at(bytes, 18), 62, "not x86_64 (e_machine)");
    let phoff = u64_at(bytes, 32) as usize;
    let phentsize = u16_at(bytes, 54) as usize;
    let phnum = u16_at(bytes, 56) as usize;
    assert!(phentsize >= 56, "bad e_phentsize {phentsize}");
    let mut types = Vec::new();
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(bytes, ph);
        types.push(p_type);
        if p_type == PT_DYNAMIC {
            let offset = u64_at(bytes, ph + 8) as usize;
            let filesz = u64_at(bytes, ph + 32) as usize;
            for entry in bytes[offset..offset + filesz].chunks_exact(16) {
                let tag = u64_at(entry, 0);
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_NEEDED {
                    needed += 1;
                }
            }
        }
    }
    (types, needed)
}

#[test]
fn elf_parser_sees_the_interpreter_of_a_dynamic_binary() {
    // Guard against a parser that can never fail: the test runner itself is
    // a dynamically linked glibc program.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let (types, needed) = elf_facts(&me);
    assert!(types.contains(&PT_INTERP), "{types:?}");
    assert!(needed > 0);
}

#[test]
fn static_binary_has_no_interpreter_no_needed_libraries_and_is_small() {
    let bin = common::static_forgexec();
    let bytes = std::fs::read(&bin).unwrap();
    let (types, needed) = elf_facts(&bytes);
    assert!(
        !types.contains(&PT_INTERP),
        "{} has PT_INTERP: dynamically linked",
        bin.display()
    );
    assert_eq!(needed, 0, "{} needs shared libraries", bin.display());
    let size = bytes.len() as u64;
    assert!(
        size <= MAX_BYTES,
        "{} is {size} bytes, over {MAX_BYTES}",
        bin.display()
    );
}

fn expected_version() -> String {
    format!("forgexec {}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn version_runs_in_a_chroot_holding_only_the_binary() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test chroots and must run as root (as tests/run and .ci/run do)"
    );
    let bin = common::static_forgexec();
    let root = tempfile::tempdir().unwrap();
    common::empty_rootfs_with(root.path(), &[(bin.as_path(), "/forgexec", 0o755)]);
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "the root holds only the binary");
    let out = common::run_ok(
        Command::new(common::require_program(
            "chroot",
            "apt-get install coreutils",
        ))
        .arg(root.path())
        .args(["/forgexec", "--version"])
        .env_clear(),
    );
    assert_eq!(out.trim(), expected_version());
}

#[test]
fn version_runs_in_an_empty_docker_image() {
    common::docker_ready();
    let bin = common::static_forgexec();
    let root = tempfile::tempdir().unwrap();
    common::empty_rootfs_with(root.path(), &[(bin.as_path(), "/forgexec", 0o755)]);
    assert!(!Path::new(&root.path().join("bin")).exists());
    let image = common::import_image(&common::unique_name("forgexec-empty"), root.path());
    let out = common::docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        image.tag(),
        "/forgexec",
        "--version",
    ]);
    assert_eq!(out, expected_version());
}
