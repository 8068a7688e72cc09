"""Protocol codecs: request bodies of each protocol -> the contract's rows (or, untyped, the model's input), and
predictions -> each protocol's response. Pure functions of the body and the contract; the routers call them."""
