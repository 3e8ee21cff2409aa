rule topk_units:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        table="results/units/topk.csv",
        index="results/units/topk.json",
        pages=directory("results/units/topk"),
    log:
        "logs/units/topk_units.log",
    params:
        units=config["units"],
        layers=config["layers"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/topk_units.py"
