using System.Text;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// A <c>WWW-Authenticate</c> challenge from a registry: <c>Bearer realm="…",service="…",scope="…"</c>
/// (go and get a token there) or <c>Basic realm="…"</c> (send a user name and password).
/// </summary>
/// <param name="Scheme">The scheme, such as <c>Bearer</c> or <c>Basic</c>.</param>
/// <param name="Parameters">The auth parameters, names compared without case.</param>
internal sealed record AuthChallenge(string Scheme, IReadOnlyDictionary<string, string> Parameters)
{
    /// <summary>Whether this is a bearer-token challenge.</summary>
    public bool IsBearer => Scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether this is a basic-auth challenge.</summary>
    public bool IsBasic => Scheme.Equals("Basic", StringComparison.OrdinalIgnoreCase);

    /// <summary>A parameter's value, or null.</summary>
    public string? this[string name] => Parameters.GetValueOrDefault(name);

    /// <summary>The challenge of a 401 response, Bearer before Basic; null when there is none.</summary>
    public static AuthChallenge? From(HttpResponseMessage response)
    {
        ArgumentNullException.ThrowIfNull(response);

        // Read unvalidated: the typed header drops a value it cannot parse, and registries vary.
        if (!response.Headers.NonValidated.TryGetValues("WWW-Authenticate", out var values))
        {
            return null;
        }

        var challenges = values.Select(Parse).OfType<AuthChallenge>().ToList();
        return challenges.FirstOrDefault(c => c.IsBearer) ?? challenges.FirstOrDefault(c => c.IsBasic)
            ?? challenges.FirstOrDefault();
    }

    /// <summary>Parses one challenge such as <c>Bearer realm="https://auth",service="registry"</c>.</summary>
    public static AuthChallenge? Parse(string? header)
    {
        if (string.IsNullOrWhiteSpace(header))
        {
            return null;
        }

        string text = header.Trim();
        int space = text.IndexOf(' ', StringComparison.Ordinal);
        string scheme = space < 0 ? text : text[..space];
        string rest = space < 0 ? "" : text[(space + 1)..];
        return new AuthChallenge(scheme, ParseParameters(rest));
    }

    /// <summary>Parses <c>name=value</c> and <c>name="quoted \" value"</c> pairs, comma separated.</summary>
    public static IReadOnlyDictionary<string, string> ParseParameters(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        int i = 0;
        while (i < text.Length)
        {
            while (i < text.Length && (text[i] == ',' || char.IsWhiteSpace(text[i])))
            {
                i++;
            }

            int nameStart = i;
            while (i < text.Length && text[i] != '=' && text[i] != ',')
            {
                i++;
            }

            string name = text[nameStart..i].Trim();
            if (i >= text.Length || text[i] != '=')
            {
                continue;
            }

            i++;
            var value = new StringBuilder();
            if (i < text.Length && text[i] == '"')
            {
                i++;
                while (i < text.Length && text[i] != '"')
                {
                    if (text[i] == '\\' && i + 1 < text.Length)
                    {
                        i++;
                    }

                    value.Append(text[i]);
                    i++;
                }

                i++;
            }
            else
            {
                while (i < text.Length && text[i] != ',')
                {
                    value.Append(text[i]);
                    i++;
                }
            }

            if (name.Length > 0)
            {
                parameters[name] = value.ToString().Trim();
            }
        }

        return parameters;
    }
}
