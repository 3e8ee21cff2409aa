rule ablation:
    input:
        manifest="results/manifest.csv",
        model_info="results/model/model_info.json",
        weights=get_weights_input,
        topk="results/units/topk.csv",
        dissect=get_ablation_dissect_input,
    output:
        layers=expand("results/ablation/{layer}.csv", layer=get_layer_files("ablation")),
        curves="results/ablation/curves.csv",
        curves_png=report(
            "results/ablation/curves.png",
            caption="../report/ablation.rst",
            category="Dissection",
        ),
        units="results/ablation/units.csv",
        summary="results/ablation/summary.json",
    log:
        "logs/ablation.log",
    benchmark:
        "results/benchmarks/ablation.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        model=config["model"],
        weights_sha256=get_weights_sha256,
        ablation=config["ablation"],
        preprocess=config["preprocess"],
        layers=config["layers"],
        layer_csvs=lambda wildcards: get_layer_folders(
            "ablation", "results/ablation", ".csv"
        ),
        dissect_summaries=get_ablation_dissect_summaries,
    script:
        "../scripts/ablation.py"
