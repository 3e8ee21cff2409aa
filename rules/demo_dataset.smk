rule demo_dataset:
    output:
        manifest="results/demo/manifest.csv",
        images=directory("results/demo/images"),
    log:
        "logs/demo_dataset.log",
    benchmark:
        "results/benchmarks/demo_dataset.tsv"
    params:
        demo=config["dataset"]["demo"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/demo_dataset.py"
