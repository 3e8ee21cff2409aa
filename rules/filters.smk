rule filters:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
        stats="results/units/stats.csv",
        weights=get_weights_input,
    output:
        report(
            directory("results/units/filters"),
            patterns=["{kind}/{name}.png"],
            caption="../report/filters.rst",
            category="Units",
            subcategory="filters and activation maps",
        ),
    log:
        "logs/units/filters.log",
    benchmark:
        "results/benchmarks/filters.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        filters=config["filters"],
        layers=config["layers"],
        preprocess=config["preprocess"],
        model=config["model"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/filters.py"
