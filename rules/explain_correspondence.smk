rule explain_correspondence:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        delta="results/explain/correspondence/delta.csv",
        examples=report(
            "results/explain/correspondence/examples.png",
            caption="../report/explain_correspondence.rst",
            category="Explanations",
        ),
        summary="results/explain/correspondence/summary.json",
    log:
        "logs/explain/correspondence.log",
    benchmark:
        "results/benchmarks/explain_correspondence.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        model=config["model"],
        weights_sha256=get_weights_sha256,
        correspondence=get_explain_section("correspondence"),
        preprocess=config["preprocess"],
        layers=config["layers"],
    script:
        "../scripts/explain_correspondence.py"
