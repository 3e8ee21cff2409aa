rule report:
    input:
        unpack(get_report_inputs),
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        benchmarks=get_benchmark_files,
    output:
        # pages/ and assets/ are written beside it by the script (params): as directory()
        # outputs Snakemake would put a .snakemake_timestamp inside the shipped site
        html="results/report/index.html",
    log:
        "logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 20 * attempt,
    params:
        pages="results/report/pages",
        assets="results/report/assets",
        report=config["report"],
        dataset=config["dataset"],
    script:
        "../scripts/report.py"
