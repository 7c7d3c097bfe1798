-- One step: the model answers, the run is done.
return require("spool").agent { prompt = "hello.md", max_steps = 1 }
