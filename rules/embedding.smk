rule embedding:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        coords="results/embedding/coords.csv",
        scatter="results/embedding/scatter.png",
        mosaic="results/embedding/mosaic.png",
        cloud="results/embedding/cloud.png",
        summary="results/embedding/embedding.json",
    log:
        "logs/embedding/embedding.log",
    params:
        embedding=config["embedding"],
    threads: 4
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/embedding.py"
