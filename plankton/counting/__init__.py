"""Counts that match a careful count: the count evidence a model keeps
(``calibration``) and the estimates with intervals made from it
(``quantify``). It needs the results and the open-set decision only, so
the cascade that composes the predictors can hold it without reaching up."""
