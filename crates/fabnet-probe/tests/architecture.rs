//! Architecture invariant: fabnet-probe is model-independent. It depends on neither fabnet-core nor
//! candle, so probes and retrieval work on embeddings from any source.

#[test]
fn no_model_dependencies() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split(['.', '=']).next().map(str::trim))
        .filter(|n| !n.is_empty())
        .collect();
    assert!(
        deps.contains(&"image"),
        "parsed the dependency table: {deps:?}"
    );
    for banned in ["fabnet-core", "fabnet-train", "candle-core", "candle-nn"] {
        assert!(
            !deps.contains(&banned),
            "fabnet-probe must not depend on {banned}"
        );
    }
}
