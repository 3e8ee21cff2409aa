rule unit_stats:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        stats="results/units/stats.csv",
        summary="results/units/summary.csv",
        plot="results/units/firing_rate.png",
    log:
        "logs/units/unit_stats.log",
    params:
        unit_stats=config["unit_stats"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/unit_stats.py"
