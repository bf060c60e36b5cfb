fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/strata.proto");
    tonic_prost_build::configure().bytes(".strata.v1.ChunkResp").compile_protos(&["proto/strata.proto"], &["proto"])?;
    Ok(())
}
