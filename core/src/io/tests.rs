use super::*;

fn temp_leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
        .count()
}

#[test]
fn refuses_to_overwrite_and_keeps_old_content_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let p = dir.join("out.txt");
    write_bytes_atomic(&p, false, b"one").unwrap();
    assert!(write_bytes_atomic(&p, false, b"two").unwrap_err().to_string().contains("--force"));
    let err = write_atomic(&p, true, |_| Err(std::io::Error::other("disk full")));
    assert!(err.unwrap_err().to_string().contains("disk full"));
    assert_eq!(std::fs::read(&p).unwrap(), b"one");
    write_bytes_atomic(&p, true, b"two").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(temp_leftovers(dir), 0);
    write_bytes_atomic(&dir.join("new/sub/x.txt"), false, b"x").unwrap();
    // A temporary file of this process (e.g. from an earlier write that crashed) does not block the next one.
    std::fs::write(dir.join(format!(".out.txt.tmp-{}-0", std::process::id())), b"stale").unwrap();
    write_bytes_atomic(&p, true, b"three").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"three");
}

#[test]
fn a_file_created_meanwhile_by_another_writer_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("race.txt");
    // The other writer finishes while this one is still writing.
    let err = write_atomic(&p, false, |f| {
        std::fs::write(&p, b"other")?;
        f.write_all(b"mine")
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("another process"), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), b"other");
    assert_eq!(temp_leftovers(dir.path()), 0);
}

#[test]
fn two_threads_racing_for_one_output_leave_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shared.txt");
    let barrier = std::sync::Barrier::new(8);
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let (p, barrier) = (&p, &barrier);
                s.spawn(move || {
                    write_atomic(p, false, |f| {
                        barrier.wait();
                        f.write_all(&[i; 64])
                    })
                    .is_ok()
                })
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(wins, 1);
    let content = std::fs::read(&p).unwrap();
    assert!(content.len() == 64 && content.iter().all(|&b| b == content[0]));
}

#[test]
fn inputs_are_never_replaced_even_forced_nor_through_links() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scene.ply");
    std::fs::write(&input, b"input").unwrap();
    protect_input(&input);
    let err = write_bytes_atomic(&input, true, b"x").unwrap_err().to_string();
    assert!(err.contains("is an input"), "{err}");
    #[cfg(unix)]
    {
        let link = dir.path().join("alias.ply");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(write_bytes_atomic(&link, true, b"x").unwrap_err().to_string().contains("is an input"));
        let hard = dir.path().join("hard.ply");
        std::fs::hard_link(&input, &hard).unwrap();
        assert!(write_bytes_atomic(&hard, true, b"x").unwrap_err().to_string().contains("is an input"));
    }
    assert_eq!(std::fs::read(&input).unwrap(), b"input");
    // A new file that happens to get a deleted input's inode is not that input.
    std::fs::remove_file(&input).unwrap();
    #[cfg(unix)]
    for name in ["alias.ply", "hard.ply"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
    write_bytes_atomic(&dir.path().join("other.ply"), false, b"a new file").unwrap();
    write_bytes_atomic(&dir.path().join("other.ply"), true, b"replaced").unwrap();
}

#[cfg(unix)]
#[test]
fn a_hard_linked_output_is_not_split_silently() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, b"old").unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let err = write_bytes_atomic(&b, true, b"new").unwrap_err().to_string();
    assert!(err.contains("hard links"), "{err}");
    assert_eq!(std::fs::read(&a).unwrap(), b"old");
}

#[test]
fn stale_temp_files_of_dead_processes_are_swept() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // PIDs above the kernel's maximum (4 194 304) never run.
    let stale = dir.path().join(".out.wav.tmp-4194305-0");
    let other_output = dir.path().join(".keep.wav.tmp-4194305-0");
    let live = dir.path().join(format!(".out.wav.tmp-{}-7", std::process::id()));
    for f in [&stale, &other_output, &live] {
        std::fs::write(f, b"x").unwrap();
    }
    write_bytes_atomic(&dir.path().join("out.wav"), false, b"new").unwrap();
    assert!(!stale.exists());
    assert!(other_output.exists() && live.exists());
}

#[test]
fn in_flight_temp_files_are_removed_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    let err = write_atomic(&p, false, |f| {
        f.write_all(b"partial")?;
        // What the signal handler does while a write is under way.
        assert!(remove_temp_files() >= 1);
        Err(std::io::Error::other("interrupted"))
    });
    assert!(err.is_err());
    assert_eq!(temp_leftovers(dir.path()), 0);
    assert!(!p.exists());
}

#[cfg(unix)]
#[test]
fn walks_visit_each_real_file_once_and_skip_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("in");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.wav"), b"a").unwrap();
    std::fs::write(root.join("sub/b.wav"), b"b").unwrap();
    std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(root.join("a.wav"), root.join("z-alias.wav")).unwrap();
    let fifo = root.join("pipe.wav");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let files = walk_files(&root, &|p| p.extension().is_some_and(|e| e == "wav")).unwrap();
    let names: Vec<String> = files.iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
    assert_eq!(names, ["a.wav", "sub/b.wav"]);
    if made {
        let err = open_input(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

#[test]
fn oversized_inputs_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.json");
    std::fs::write(&p, vec![b' '; 2000]).unwrap();
    assert!(read_input(&p, 1000).unwrap_err().to_string().contains("over the limit"));
    assert_eq!(read_input(&p, 2000).unwrap().len(), 2000);
}

#[test]
fn unwritable_output_folders_fail_the_early_check() {
    let dir = tempfile::tempdir().unwrap();
    check_writable_folder(&dir.path().join("new/out.json")).unwrap();
    // A file where a folder should be.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    assert!(check_writable_folder(&dir.path().join("file/out.json")).is_err());
}
