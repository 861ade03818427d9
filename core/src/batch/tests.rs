//! Tests of the batch module: shard cover, torn manifests, resume checks, merge reports, list files.

use super::*;

fn record(input: &str, output: &Path, status: Status, checksum: Option<String>) -> Record {
    Record {
        input: input.into(),
        output: output.to_path_buf(),
        status,
        error: (status != Status::Ok).then(|| "boom".to_string()),
        seconds: 0.5,
        checksum,
        shard: "0/1".into(),
    }
}

#[test]
fn shards_are_a_disjoint_cover_of_the_sorted_list() {
    for len in 0..40usize {
        // Unsorted, with repeats: shards work on the sorted, de-duplicated list.
        let items: Vec<usize> = (0..len).map(|k| (k * 7919) % len.max(1)).chain((0..len).rev()).collect();
        for n in 1..=9 {
            let mut seen = vec![0usize; len];
            let mut sizes = Vec::new();
            for i in 0..n {
                let part = Shard::new(i, n).unwrap().select(items.clone());
                assert!(part.windows(2).all(|w| w[0] < w[1]), "shard {i}/{n} of {len} is sorted");
                sizes.push(part.len());
                for x in part {
                    seen[x] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "len {len}, n {n}: {seen:?}");
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "balanced: {sizes:?}");
        }
    }
}

#[test]
fn shard_parses_and_names_the_flag_in_errors() {
    assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
    assert_eq!(Shard::new(2, 5).unwrap().to_string(), "2/5");
    for bad in ["5/5", "0/0", "1", "a/2", "-1/2", "1/2/3"] {
        let err = bad.parse::<Shard>().unwrap_err().to_string();
        assert!(err.contains("--shard"), "{bad}: {err}");
    }
    assert!("3/3".parse::<Shard>().unwrap_err().to_string().contains("0 to 2"));
}

#[test]
fn a_torn_last_line_is_ignored_and_cut_before_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/m.jsonl");
    let out = dir.path().join("a.out");
    let mut w = ManifestWriter::open(&path, false).unwrap();
    w.append(&record("a", &out, Status::Ok, Some("00".into()))).unwrap();
    w.append(&record("b", &out, Status::Failed, None)).unwrap();
    drop(w);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();
    let m = Manifest::read(&path).unwrap();
    assert!(m.torn_tail);
    assert_eq!(m.records.len(), 1);
    assert_eq!(m.records[0].input, PathBuf::from("a"));

    let mut w = ManifestWriter::open(&path, false).unwrap();
    w.append(&record("c", &out, Status::Skipped, None)).unwrap();
    let m = Manifest::read(&path).unwrap();
    assert!(!m.torn_tail);
    let inputs: Vec<_> = m.records.iter().map(|r| r.input.clone()).collect();
    assert_eq!(inputs, vec![PathBuf::from("a"), PathBuf::from("c")]);

    // A bad line in the middle is corruption, not a crash: an error naming the line.
    std::fs::write(&path, "{\"x\":1}\n").unwrap();
    let err = Manifest::read(&path).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    assert!(Manifest::read(&dir.path().join("none.jsonl")).unwrap().records.is_empty());
}

#[test]
fn resume_trusts_only_an_ok_record_whose_output_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.wav");
    std::fs::write(&out, b"enhanced").unwrap();
    let sum = sha256_file(&out).unwrap();
    assert_eq!(sum.len(), 64);
    let m = Manifest {
        records: vec![
            record("./in/a.wav", &out, Status::Failed, None),
            record("in/a.wav", &out, Status::Ok, Some(sum)),
            record("in/b.wav", &out, Status::Failed, None),
        ],
        ..Manifest::default()
    };
    let latest = m.latest();
    assert_eq!(Manifest::check(&latest, Path::new("in//a.wav"), &out), Progress::Complete);
    assert!(matches!(Manifest::check(&latest, Path::new("in/b.wav"), &out), Progress::Todo(_)));
    assert!(matches!(Manifest::check(&latest, Path::new("in/c.wav"), &out), Progress::Todo(_)));
    let other = dir.path().join("other.wav");
    assert!(matches!(Manifest::check(&latest, Path::new("in/a.wav"), &other), Progress::Todo(_)));
    std::fs::write(&out, b"enhanceD").unwrap();
    match Manifest::check(&latest, Path::new("in/a.wav"), &out) {
        Progress::Todo(why) => assert!(why.contains("changed"), "{why}"),
        Progress::Complete => panic!("a changed output must be redone"),
    }
    std::fs::remove_file(&out).unwrap();
    assert!(matches!(Manifest::check(&latest, Path::new("in/a.wav"), &out), Progress::Todo(_)));
}

#[test]
fn merge_finds_missing_duplicated_failed_and_unexpected_inputs() {
    let out = Path::new("o");
    let ok = |i: &str| record(i, out, Status::Ok, Some("ab".into()));
    let m0 = Manifest {
        path: "m0".into(),
        records: vec![ok("a"), record("b", out, Status::Failed, None), ok("b")],
        torn_tail: false,
    };
    let m1 = Manifest { path: "m1".into(), records: vec![ok("c"), ok("d")], torn_tail: true };
    let all: Vec<PathBuf> = ["a", "b", "c", "d"].iter().map(PathBuf::from).collect();
    let report = merge(&[m0.clone(), m1.clone()], &Expected::Inputs(all.clone()));
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.ok, 4);
    assert_eq!(report.records.len(), 4);
    assert_eq!(report.torn, vec![PathBuf::from("m1")]);
    assert!(merge(&[m0.clone(), m1.clone()], &Expected::Count(4)).is_complete());

    let report = merge(std::slice::from_ref(&m0), &Expected::Inputs(all.clone()));
    assert!(!report.is_complete());
    assert_eq!(report.missing, vec![PathBuf::from("c"), PathBuf::from("d")]);
    assert_eq!(merge(std::slice::from_ref(&m0), &Expected::Count(4)).missing_count, 2);

    let m2 = Manifest {
        path: "m2".into(),
        records: vec![ok("d"), record("e", out, Status::Failed, None)],
        torn_tail: false,
    };
    let report = merge(&[m0, m1, m2], &Expected::Inputs(all));
    assert_eq!(report.duplicated, vec![(PathBuf::from("d"), vec![PathBuf::from("m1"), PathBuf::from("m2")])]);
    assert_eq!(report.unexpected, vec![PathBuf::from("e")]);
    assert_eq!(report.failed, vec![(PathBuf::from("e"), "boom".to_string())]);
    assert!(!report.is_complete());
}

#[test]
fn list_lines_resolve_against_the_list_folder() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# inputs\nsub/b.wav\n\n ./a.wav \nsub/b.wav\n/abs/c.wav\n").unwrap();
    let entries = read_list(&list).unwrap();
    let got: Vec<(PathBuf, PathBuf)> = entries.into_iter().map(|e| (e.path, e.relative)).collect();
    assert_eq!(
        got,
        vec![
            (PathBuf::from("/abs/c.wav"), PathBuf::from("c.wav")),
            (dir.path().join("a.wav"), PathBuf::from("a.wav")),
            (dir.path().join("sub/b.wav"), PathBuf::from("sub/b.wav")),
        ]
    );
    assert!(read_list(&dir.path().join("missing.txt")).unwrap_err().to_string().contains("missing.txt"));
}
