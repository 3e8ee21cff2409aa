checkpoint manifest:
    input:
        source=get_dataset_source,
    output:
        csv="results/manifest.csv",
        classes="results/manifest.classes.json",
    log:
        "logs/manifest.log",
    params:
        dataset=config["dataset"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/manifest.py"
