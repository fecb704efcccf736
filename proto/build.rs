//! Compiles every `berth/**/*.proto` with protox (pure Rust, no `protoc`) and generates
//! tonic clients and servers. The encoded descriptor set is kept in OUT_DIR for the API
//! snapshot test.

use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    proto_files(&root.join("berth"), &mut files)?;
    files.sort();
    let relative: Vec<PathBuf> =
        files.iter().map(|f| f.strip_prefix(&root).map(Path::to_path_buf)).collect::<Result<_, _>>()?;

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(false).include_imports(true);
    compiler.open_files(&relative)?;
    let descriptors = compiler.file_descriptor_set();

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("berth_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=berth");
    Ok(())
}
