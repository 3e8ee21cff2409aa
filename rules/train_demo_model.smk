rule train_demo_model:
    input:
        manifest="results/manifest.csv",
    output:
        weights="results/model/demo_model.pt",
        metrics="results/model/train_metrics.json",
        checkpoints=get_demo_checkpoints(),
    log:
        "logs/train_demo_model.log",
    benchmark:
        "results/benchmarks/train_demo_model.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        train=config["model"]["train"],
        preprocess=config["preprocess"],
        checkpoint_epochs=get_demo_checkpoint_epochs(),
    script:
        "../scripts/train_demo_model.py"
