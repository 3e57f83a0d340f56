"""`capability-service process`: the job pipelines over files, folders and URLs, in this process, no server.

`options` turns `--option key=value` into the job API's validated config, `inputs` turns the command's
inputs into work items with their output paths, `runner` runs the same plugins on the same CPU executor
as the service, `console` draws the progress bar and the summary, and `command` wires them together.
"""
