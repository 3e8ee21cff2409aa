rule explain_images:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
        # only the topk kind reads the top-k table (so a units change reruns no explanation)
        topk=branch(
            config["explain"]["images"]["kind"] == "topk", "results/units/topk.csv"
        ),
    output:
        images="results/explain/images.csv",
    log:
        "logs/explain/explain_images.log",
    benchmark:
        "results/benchmarks/explain_images.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 15 * attempt,
    params:
        images=config["explain"]["images"],
    script:
        "../scripts/explain_images.py"
