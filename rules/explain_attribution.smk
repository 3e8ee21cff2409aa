rule explain_attribution:
    input:
        chunk_maps=get_chunk_outputs("explain_attribution", "maps"),
        chunk_panels=get_chunk_outputs("explain_attribution", "panels"),
        images="results/explain/images.csv",
        classes="results/manifest.classes.json",
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
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    params:
        attribution=config["explain"]["attribution"],
        preprocess=config["preprocess"],
    script:
        "../scripts/explain_attribution.py"
