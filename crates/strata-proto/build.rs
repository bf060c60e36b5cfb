// The .proto is compiled by protox (pure Rust), so building needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/strata.proto");
    let fds = protox::compile(["proto/strata.proto"], ["proto"])?;
    // Block payloads as `Bytes`: a block is decoded and handed on without another copy.
    tonic_prost_build::configure()
        .bytes(".strata.v1.BlockData.data")
        .bytes(".strata.v1.PutBlockReq.data")
        .compile_fds(fds)?;
    Ok(())
}
