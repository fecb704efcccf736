// Included by the crates' `fuzz_corpus` unit tests (not by the fuzz targets): runs every
// input of `fuzz/corpus/<target>/` — the seeds and any crash inputs kept there — through
// that target's `check`. The path is relative to the including crate (services/<crate>).

fn check_corpus(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        eprintln!("{}", file.display());
        check(&std::fs::read(&file).unwrap());
    }
}
