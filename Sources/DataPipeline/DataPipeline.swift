// DataPipeline target.
