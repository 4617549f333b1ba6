namespace RateEngine;

/// <summary>One model's price in dollars per million tokens, as providers publish it.</summary>
/// <param name="Model">The model's name, as the application's requests name it.</param>
/// <param name="InputPerMillion">Dollars per million input (prompt) tokens. Not negative.</param>
/// <param name="OutputPerMillion">Dollars per million output (completion) tokens. Not negative.</param>
public sealed record ModelPrice(string Model, decimal InputPerMillion, decimal OutputPerMillion);
