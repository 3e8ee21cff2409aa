rule topk_units:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        table="results/units/topk.csv",
        index="results/units/topk.json",
        pages=report(
            directory("results/units/topk"),
            patterns=["{layer}/{name}.png"],
            caption="../report/topk_units.rst",
            category="Units",
            subcategory="{layer}",
        ),
    log:
        "logs/units/topk_units.log",
    benchmark:
        "results/benchmarks/topk_units.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        units=config["units"],
        layers=config["layers"],
    script:
        "../scripts/topk_units.py"
