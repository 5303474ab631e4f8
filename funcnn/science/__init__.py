"""The science built on the library: neuron models, Bayesian weights, the perceptron."""
