rule performance:
    input:
        shards=get_shard_paths,
        shard_index="results/features/index.json",
        manifest="results/manifest.csv",
    output:
        overall="results/performance/overall.csv",
        per_class="results/performance/per_class.csv",
        per_attribute="results/performance/per_attribute.csv",
        tables="results/performance/tables.md",
        confusion="results/performance/confusion.csv",
        confusion_plot="results/performance/confusion.png",
        plots=directory("results/performance/per_attribute"),
        comparison="results/performance/comparison.csv",
        agreement="results/performance/agreement.csv",
        comparison_examples="results/performance/comparison_examples.csv",
        comparison_panel="results/performance/comparison.png",
    log:
        "logs/performance/performance.log",
    params:
        performance=config["performance"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/performance.py"
