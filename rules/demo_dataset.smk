rule demo_dataset:
    output:
        manifest="results/demo/manifest.csv",
        images=directory("results/demo/images"),
    log:
        "logs/demo_dataset.log",
    benchmark:
        "results/benchmarks/demo_dataset.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        demo=config["dataset"]["demo"],
    script:
        "../scripts/demo_dataset.py"
