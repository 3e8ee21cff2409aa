rule explain_invariance:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        curves="results/explain/invariance/curves.csv",
        translation=report(
            "results/explain/invariance/vertical_translation.png",
            caption="../report/explain_invariance.rst",
            category="Explanations",
        ),
        scale=report(
            "results/explain/invariance/scale.png",
            caption="../report/explain_invariance.rst",
            category="Explanations",
        ),
        rotation=report(
            "results/explain/invariance/rotation.png",
            caption="../report/explain_invariance.rst",
            category="Explanations",
        ),
        summary="results/explain/invariance/summary.json",
    log:
        "logs/explain/invariance.log",
    benchmark:
        "results/benchmarks/explain_invariance.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
        # speed settings as resources (no rerun trigger), as extract does
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        model=config["model"],
        weights_sha256=get_weights_sha256,
        invariance=config["explain"]["invariance"],
        preprocess=config["preprocess"],
        layers=config["layers"],
    script:
        "../scripts/explain_invariance.py"
