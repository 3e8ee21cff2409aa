rule dissect:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
        concepts=get_dissect_concepts,
    output:
        concepts=expand(
            "results/dissect/{layer}/concepts.csv", layer=get_layer_files("dissect")
        ),
        summaries=expand(
            "results/dissect/{layer}/summary.csv", layer=get_layer_files("dissect")
        ),
        units=expand(
            "results/dissect/{layer}/units.png", layer=get_layer_files("dissect")
        ),
        image_concepts="results/dissect/image_concepts.csv",
        detectors=report(
            "results/dissect/detectors.png",
            caption="../report/dissect.rst",
            category="Dissection",
        ),
        summary="results/dissect/summary.json",
    log:
        "logs/dissect.log",
    benchmark:
        "results/benchmarks/dissect.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        model=config["model"],
        weights_sha256=get_weights_sha256,
        dissect=config["dissect"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        layer_dirs=lambda wildcards: get_layer_folders("dissect", "results/dissect"),
    script:
        "../scripts/dissect.py"
