"""Science built on funcnn: biological neuron models (`neurons`), Bayesian networks (`bayes`) and Rosenblatt's perceptron (`perceptron`)."""
