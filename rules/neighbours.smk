rule neighbours:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        queries="results/neighbours/queries.csv",
        panels=report(
            "results/neighbours/panels.png",
            caption="../report/neighbours.rst",
            category="Neighbours",
        ),
        accuracy="results/neighbours/knn_accuracy.json",
    log:
        "logs/neighbours/neighbours.log",
    benchmark:
        "results/benchmarks/neighbours.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 4
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        neighbours=config["neighbours"],
        preprocess=config["preprocess"],
    script:
        "../scripts/neighbours.py"
