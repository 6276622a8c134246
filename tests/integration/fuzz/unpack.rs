//! The source zipball unpacker ([`unpack_zip`]): archives of arbitrary entry
//! names, kinds and symlink targets, and such archives with arbitrary bytes
//! overwritten, are unpacked or refused without a panic; nothing is ever
//! written beside the destination, and no symlink left in it resolves, on
//! the real file system and through the other links, outside it.

use std::ffi::OsString;
use std::io::{Cursor, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use forgexec::workspace::{unpack_zip, UnpackLimits};
use proptest::prelude::*;
use zip::write::SimpleFileOptions;
use zip::ZipWriter;

use super::fuzz;

/// Small limits, so that every case stays fast.
const LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 1 << 20,
    max_entries: 64,
    max_ratio: 200,
};
/// The file beside the destination that an escape would reach.
const SENTINEL: &str = "outside/evil.yml";

#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File(String, Vec<u8>, u32),
    Link(String, String),
}

/// A path from pieces that matter to the checks: `..`, `.`, empty
/// components, names that reach the sentinel, separators of other systems.
/// `dot_dot` weighs `..` against the 20 of ordinary names.
fn path(dot_dot: u32, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        20 => prop::sample::select(vec!["a", "b", "l", "c", "outside", "evil.yml", "é"]),
        dot_dot => Just(".."),
        1 => prop::sample::select(vec![".", "", "\\", "c:", "t", "/"]),
    ];
    prop::collection::vec(piece, len).prop_map(|pieces| pieces.join("/"))
}

/// An entry name: nearly always under the top folder `t/` (one name
/// outside it refuses the whole archive), sometimes anything.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => path(1, 1..5).prop_map(|p| format!("t/{p}")),
        1 => path(3, 0..5),
    ]
}

/// A symlink target: often climbing, sometimes absolute.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => path(12, 0..8),
        1 => path(4, 0..6).prop_map(|p| format!("/{p}")),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        1 => name().prop_map(|n| Entry::Dir(format!("{n}/"))),
        2 => (name(), prop::collection::vec(any::<u8>(), 0..64), 0u32..0o10000)
            .prop_map(|(n, c, m)| Entry::File(n, c, m)),
        3 => (name(), target()).prop_map(|(n, t)| Entry::Link(n, t)),
    ]
}

/// The archive of `entries`; an entry the zip writer refuses (a duplicate
/// name) is left out.
fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for entry in entries {
        let _ = match entry {
            Entry::Dir(name) => zip.add_directory(name.as_str(), SimpleFileOptions::default()),
            Entry::File(name, content, mode) => zip
                .start_file(
                    name.as_str(),
                    SimpleFileOptions::default().unix_permissions(*mode),
                )
                .and_then(|()| zip.write_all(content).map_err(Into::into)),
            Entry::Link(name, target) => {
                zip.add_symlink(name.as_str(), target.as_str(), SimpleFileOptions::default())
            }
        };
    }
    zip.finish().map(Cursor::into_inner).unwrap_or_default()
}

/// Unpacks `bytes` into a fresh `ws` beside the sentinel and checks that
/// nothing outside `ws` changed and no link in it leads out.
fn unpack_and_check(bytes: Vec<u8>, stats: &Stats) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir_in(scratch()).expect("tempdir");
    let sentinel = dir.path().join(SENTINEL);
    std::fs::create_dir_all(sentinel.parent().unwrap()).expect("mkdir");
    std::fs::write(&sentinel, "untouched").expect("sentinel");
    let ws = dir.path().join("ws");
    let result = unpack_zip(Cursor::new(bytes), &ws, &LIMITS);

    let mut beside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    beside.sort();
    let expected: &[&str] = if ws.symlink_metadata().is_ok() {
        &["outside", "ws"]
    } else {
        &["outside"]
    };
    prop_assert_eq!(beside, expected, "written beside the workspace");
    let outside: Vec<_> = std::fs::read_dir(dir.path().join("outside"))
        .expect("read_dir")
        .collect();
    prop_assert_eq!(outside.len(), 1, "written next to the sentinel");
    prop_assert_eq!(
        std::fs::read_to_string(&sentinel).expect("sentinel"),
        "untouched"
    );
    if let Ok(summary) = &result {
        prop_assert!(ws.is_dir() && !ws.is_symlink());
        stats.unpacked.fetch_add(1, Ordering::Relaxed);
        stats
            .symlinks
            .fetch_add(summary.symlinks, Ordering::Relaxed);
    }
    if ws.exists() {
        for entry in walkdir::WalkDir::new(&ws).follow_links(false) {
            let entry = entry.expect("walk");
            if entry.file_type().is_symlink() {
                prop_assert!(
                    !leads_outside(&ws, entry.path()),
                    "{} -> {:?} leads outside {}",
                    entry.path().display(),
                    std::fs::read_link(entry.path()),
                    ws.display()
                );
            }
        }
    }
    Ok(())
}

/// Where cases unpack: memory when the machine has it (a million cases of
/// file system work), else the temporary directory.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// How many cases unpacked, and the symlinks they made: a target whose
/// cases are all refused would prove little.
#[derive(Default)]
struct Stats {
    unpacked: AtomicUsize,
    symlinks: AtomicUsize,
}

impl Stats {
    fn report(&self, target: &str) {
        eprintln!(
            "fuzz target `{target}`: {} cases unpacked, with {} symlinks",
            self.unpacked.load(Ordering::Relaxed),
            self.symlinks.load(Ordering::Relaxed)
        );
    }
}

/// Whether the symlink `link` (inside `ws`) resolves, on the file system as
/// it is, to a path outside `ws`: its target is walked from its directory,
/// every existing link on the way followed (a path that does not exist is
/// taken as written), and any step above `ws` counts. A loop resolves
/// nowhere (the kernel answers ELOOP), so it leads nowhere.
fn leads_outside(ws: &Path, link: &Path) -> bool {
    let rel = link.parent().unwrap().strip_prefix(ws).unwrap();
    let mut stack: Vec<OsString> = rel
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let target = std::fs::read_link(link).unwrap();
    let mut hops = 0;
    walk(ws, &mut stack, &target, &mut hops) == Err(Stop::Outside)
}

/// Why a walk ended early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Outside,
    Loop,
}

fn walk(ws: &Path, stack: &mut Vec<OsString>, target: &Path, hops: &mut usize) -> Result<(), Stop> {
    for component in target.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => return Err(Stop::Outside),
            Component::CurDir => {}
            Component::ParentDir => {
                stack.pop().ok_or(Stop::Outside)?;
            }
            Component::Normal(name) => {
                let here: PathBuf = stack.iter().fold(ws.to_path_buf(), |p, c| p.join(c));
                let next = here.join(name);
                if next.is_symlink() {
                    *hops += 1;
                    if *hops > 40 {
                        return Err(Stop::Loop);
                    }
                    let inner = std::fs::read_link(&next).unwrap();
                    walk(ws, stack, &inner, hops)?;
                } else {
                    stack.push(name.to_os_string());
                }
            }
        }
    }
    Ok(())
}

#[test]
fn any_entries_stay_inside_the_workspace() {
    let stats = Stats::default();
    fuzz(
        "unpack_entries",
        prop::collection::vec(entry(), 0..12),
        |entries| unpack_and_check(archive(&entries), &stats),
    );
    stats.report("unpack_entries");
    assert!(
        stats.symlinks.load(Ordering::Relaxed) > 0,
        "no case made a link"
    );
}

#[test]
fn any_archive_bytes_are_unpacked_or_refused() {
    let stats = Stats::default();
    let overwrite = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
    fuzz(
        "unpack_bytes",
        (prop::collection::vec(entry(), 0..6), overwrite),
        |(entries, overwrite)| {
            let mut bytes = archive(&entries);
            if !bytes.is_empty() {
                for (index, byte) in overwrite {
                    let at = index.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            unpack_and_check(bytes, &stats)
        },
    );
    stats.report("unpack_bytes");
}
