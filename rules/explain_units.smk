rule explain_units:
    input:
        topk="results/units/topk.csv",
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
    output:
        reconstructions="results/explain/units/reconstructions.h5",
        figures=report(
            directory("results/explain/units/figures"),
            patterns=["{layer}/grid.png"],
            caption="../report/explain_units.rst",
            category="Explanations",
        ),
        summary="results/explain/units/summary.json",
    log:
        "logs/explain/explain_units.log",
    benchmark:
        "results/benchmarks/explain_units.tsv"
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
        reconstructions=config["explain"]["reconstructions"],
        model=config["model"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        weights_sha256=get_weights_sha256,
    script:
        "../scripts/explain_units.py"
