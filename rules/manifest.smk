checkpoint manifest:
    input:
        source=get_dataset_source,
        # a class-list file is an input: editing it rebuilds the manifest
        class_names=lambda wildcards: (
            config["dataset"]["class_names"]
            if isinstance(config["dataset"]["class_names"], str)
            else []
        ),
    output:
        csv="results/manifest.csv",
        classes="results/manifest.classes.json",
    log:
        "logs/manifest.log",
    benchmark:
        "results/benchmarks/manifest.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        dataset=config["dataset"],
        # label names need dataset.class_names unless the workflow trains the model on them
        names_required=class_names_required(config),
    script:
        "../scripts/manifest.py"
