rule report:
    input:
        unpack(get_report_inputs),
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        benchmarks=get_benchmark_files,
    output:
        html="results/report/index.html",
        pages=directory("results/report/pages"),
        assets=directory("results/report/assets"),
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
        report=config["report"],
        dataset=config["dataset"],
    script:
        "../scripts/report.py"
