rule export:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
        coords="results/embedding/coords.csv",
    output:
        images="results/export/images.parquet",
        codes="results/export/codes.parquet",
    log:
        "logs/export/export.log",
    benchmark:
        "results/benchmarks/export.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        # neighbours.k, block_mb and device: the per-image neighbours column
        neighbours=config["neighbours"],
    script:
        "../scripts/export.py"
