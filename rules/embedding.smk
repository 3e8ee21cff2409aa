rule embedding:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        coords="results/embedding/coords.csv",
        scatter=report(
            "results/embedding/scatter.png",
            caption="../report/embedding_scatter.rst",
            category="Embedding",
        ),
        mosaic=report(
            "results/embedding/mosaic.png",
            caption="../report/embedding_mosaic.rst",
            category="Embedding",
        ),
        cloud=report(
            "results/embedding/cloud.png",
            caption="../report/embedding_cloud.rst",
            category="Embedding",
        ),
        summary="results/embedding/embedding.json",
    log:
        "logs/embedding/embedding.log",
    benchmark:
        "results/benchmarks/embedding.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        embedding=config["embedding"],
    script:
        "../scripts/embedding.py"
