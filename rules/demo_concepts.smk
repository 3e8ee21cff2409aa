rule demo_concepts:
    output:
        index="results/demo/concepts/index.csv",
        labels="results/demo/concepts/labels.csv",
        masks=directory("results/demo/concepts/masks"),
    log:
        "logs/demo_concepts.log",
    benchmark:
        "results/benchmarks/demo_concepts.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        demo=config["dataset"]["demo"],
    script:
        "../scripts/demo_concepts.py"
