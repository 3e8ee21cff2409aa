rule unit_stats:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        stats=report(
            "results/units/stats.csv",
            caption="../report/unit_stats.rst",
            category="Units",
        ),
        summary="results/units/summary.csv",
        plot=report(
            "results/units/firing_rate.png",
            caption="../report/firing_rate.rst",
            category="Units",
        ),
        histograms="results/units/histograms.h5",
    log:
        "logs/units/unit_stats.log",
    benchmark:
        "results/benchmarks/unit_stats.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        unit_stats=config["unit_stats"],
    script:
        "../scripts/unit_stats.py"
