rule explain_keypoints:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        pck="results/explain/keypoints/pck.csv",
        pairs="results/explain/keypoints/pairs.csv",
        panels=report(
            "results/explain/keypoints/panels.png",
            caption="../report/explain_keypoints.rst",
            category="Explanations",
        ),
        summary="results/explain/keypoints/summary.json",
    log:
        "logs/explain/keypoints.log",
    benchmark:
        "results/benchmarks/explain_keypoints.tsv"
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
        keypoints=get_explain_section("keypoints"),
        preprocess=config["preprocess"],
        layers=config["layers"],
    script:
        "../scripts/explain_keypoints.py"
