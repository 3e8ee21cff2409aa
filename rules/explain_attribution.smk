rule explain_attribution:
    input:
        images="results/explain/images.csv",
        model_info="results/model/model_info.json",
        classes="results/manifest.classes.json",
        weights=get_weights_input,
    output:
        maps="results/explain/attribution/maps.h5",
        panels=report(
            directory("results/explain/attribution/panels"),
            patterns=["{name}.png"],
            caption="../report/explain_attribution.rst",
            category="Explanations",
        ),
        class_gradcam=report(
            "results/explain/attribution/class_gradcam.png",
            caption="../report/explain_attribution.rst",
            category="Explanations",
        ),
        summary="results/explain/attribution/summary.json",
    log:
        "logs/explain/explain_attribution.log",
    benchmark:
        "results/benchmarks/explain_attribution.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        # The speed settings travel as resources, which (unlike params) are no rerun
        # trigger: changing them reruns nothing.
        explain_device=config["explain"]["device"],
        explain_batch_size=config["explain"]["batch_size"],
    params:
        attribution=config["explain"]["attribution"],
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/explain_attribution.py"
