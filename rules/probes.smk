rule probes:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        table="results/probes/probes.csv",
        plot=report(
            "results/probes/probes.png",
            caption="../report/probes.rst",
            category="Similarity",
        ),
        summary="results/probes/summary.json",
    log:
        "logs/probes/probes.log",
    benchmark:
        "results/benchmarks/probes.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        probes=config["similarity"]["probes"],
        layers=config["layers"],
    script:
        "../scripts/probes.py"
