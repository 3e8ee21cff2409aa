rule synthesis_units:
    input:
        model_info=get_synthesis_model_info("units"),
        weights=get_weights_input,
        stats="results/units/stats.csv",
        shards=get_shard_paths,
    output:
        images="results/synthesis/units/images.h5",
        curves="results/synthesis/units/curves.png",
        png=report(
            directory("results/synthesis/units/png"),
            patterns=["{name}.png"],
            caption="../report/synthesis_units.rst",
            category="Synthesis",
        ),
        summary="results/synthesis/units/summary.json",
    log:
        "logs/synthesis/units.log",
    benchmark:
        "results/benchmarks/synthesis_units.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        weights_sha256=get_weights_sha256,
        model=config["model"],
        preprocess=config["preprocess"],
        layers=get_synthesis_layers("units"),
        visualisation=config["synthesis"]["visualisation"],
        device=config["synthesis"]["device"],
        seed=config["synthesis"]["seed"],
    script:
        "../scripts/synthesis_units.py"
