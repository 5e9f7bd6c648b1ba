"""`charrnn serve`: an OpenAI-compatible HTTP API, continuous batching and a web page.

`protocol` reads requests and shapes responses, `engine` steps every open completion as one
batch on a worker thread, `app` holds the routes and the server's life; `page.html` is the page.
"""
