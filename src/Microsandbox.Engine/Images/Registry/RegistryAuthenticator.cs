using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// Answers registry auth challenges and remembers the answers: which registries take Basic
/// credentials, where each registry's token service is, and the tokens fetched per scope, so that
/// after the first 401 later requests carry the right header from the start.
/// </summary>
internal sealed class RegistryAuthenticator
{
    private static readonly TimeSpan DefaultTokenLifetime = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan ExpirySlack = TimeSpan.FromSeconds(10);

    private readonly HttpClient _http;
    private readonly RegistryCredentials _credentials;
    private readonly Func<Uri, bool> _mayCarrySecrets;
    private readonly ConcurrentDictionary<string, bool> _basic = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, AuthChallenge> _tokenServices =
        new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, (string Token, DateTimeOffset Expires)> _tokens =
        new(StringComparer.Ordinal);

    /// <param name="http">The client that talks to token services too.</param>
    /// <param name="credentials">Where user names and passwords come from.</param>
    /// <param name="mayCarrySecrets">
    /// Whether a URI is safe for credentials (TLS, loopback or declared insecure).
    /// </param>
    public RegistryAuthenticator(
        HttpClient http, RegistryCredentials credentials, Func<Uri, bool> mayCarrySecrets)
    {
        _http = http;
        _credentials = credentials;
        _mayCarrySecrets = mayCarrySecrets;
    }

    /// <summary>Adds the Authorization header that earlier challenges from this registry call for.</summary>
    public async Task AuthorizeAsync(
        HttpRequestMessage request,
        string registry,
        string? scope,
        object target,
        CancellationToken cancellationToken)
    {
        if (_basic.ContainsKey(registry) && _credentials.Find(registry) is { } credential)
        {
            request.Headers.Authorization = BasicHeader(credential);
            return;
        }

        if (_tokens.TryGetValue(TokenKey(registry, scope), out var cached)
            && cached.Expires > DateTimeOffset.UtcNow)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", cached.Token);
            return;
        }

        // The token service is known from an earlier challenge: fetch the token for this scope now
        // rather than spend a round trip on a 401 first.
        if (scope is not null && _tokenServices.TryGetValue(registry, out AuthChallenge? service))
        {
            string token = await FetchTokenAsync(service, registry, scope, null, target, cancellationToken)
                .ConfigureAwait(false);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
    }

    /// <summary>
    /// Prepares the answer to a 401's challenge so that the retried request is authorized, or fails
    /// with <c>RegistryAuthFailed</c> when there is no way to answer it.
    /// </summary>
    public async Task AnswerAsync(
        AuthChallenge? challenge,
        string registry,
        string? scope,
        object target,
        CancellationToken cancellationToken)
    {
        if (challenge is { IsBearer: true } && challenge["realm"] is { Length: > 0 })
        {
            _tokenServices[registry] = challenge;

            // The token held for this scope, if any, was just refused: ask again, for our scope and
            // the one the registry names (a push needs pull,push where a HEAD was granted pull).
            _tokens.TryRemove(TokenKey(registry, scope), out _);
            await FetchTokenAsync(challenge, registry, scope, challenge["scope"], target, cancellationToken)
                .ConfigureAwait(false);
            return;
        }

        if (challenge is { IsBasic: true })
        {
            if (_credentials.Find(registry) is null)
            {
                throw RegistryErrors.AuthFailed(registry, target,
                    "it asks for a user name and password, and none are configured for it.");
            }

            _basic[registry] = true;
            return;
        }

        throw RegistryErrors.AuthFailed(registry, target, challenge is null
            ? "it sent 401 without a challenge."
            : $"its auth scheme {challenge.Scheme} is not supported.");
    }

    /// <summary>The failure for a request still refused after the challenge was answered.</summary>
    public SandboxException Refused(string registry, object target)
    {
        RegistryCredential? credential = _credentials.Find(registry);
        return RegistryErrors.AuthFailed(registry, target, credential is null
            ? "anonymous access is not allowed (the repository may also not exist)."
            : $"the credentials of user '{credential.Username}' were not accepted.");
    }

    /// <summary>
    /// Gets a token for <paramref name="scope"/> (and for the challenge's own scope), cached under
    /// the former.
    /// </summary>
    private async Task<string> FetchTokenAsync(
        AuthChallenge service,
        string registry,
        string? scope,
        string? challengeScope,
        object target,
        CancellationToken cancellationToken)
    {
        string key = TokenKey(registry, scope);
        if (_tokens.TryGetValue(key, out var cached) && cached.Expires > DateTimeOffset.UtcNow)
        {
            return cached.Token;
        }

        if (!Uri.TryCreate(service["realm"], UriKind.Absolute, out Uri? realm)
            || realm.Scheme is not ("https" or "http"))
        {
            throw RegistryErrors.AuthFailed(registry, target,
                $"its token service '{service["realm"]}' is not a URL.");
        }

        var query = new StringBuilder(realm.Query.Length > 1 ? realm.Query[1..] + "&" : "");
        if (service["service"] is { } name)
        {
            query.Append("service=").Append(Uri.EscapeDataString(name)).Append('&');
        }

        foreach (string wanted in new[] { scope, challengeScope }.OfType<string>().Distinct())
        {
            query.Append("scope=").Append(Uri.EscapeDataString(wanted)).Append('&');
        }

        var uri = new UriBuilder(realm) { Query = query.ToString().TrimEnd('&') }.Uri;
        using var request = new HttpRequestMessage(HttpMethod.Get, uri);
        RegistryCredential? credential = _credentials.Find(registry);
        if (credential is not null && _mayCarrySecrets(uri))
        {
            request.Headers.Authorization = BasicHeader(credential);
        }

        using HttpResponseMessage response = await _http.SendAsync(request, cancellationToken)
            .ConfigureAwait(false);
        if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
        {
            throw RegistryErrors.AuthFailed(registry, target, credential is null
                ? "its token service refused anonymous access."
                : $"its token service refused the credentials of user '{credential.Username}'.");
        }

        if (!response.IsSuccessStatusCode)
        {
            throw RegistryErrors.AuthFailed(registry, target,
                $"its token service answered {(int)response.StatusCode} {response.StatusCode}.");
        }

        var (token, lifetime) = await ReadTokenAsync(response, registry, target, cancellationToken)
            .ConfigureAwait(false);
        _tokens[key] = (token, DateTimeOffset.UtcNow + lifetime - ExpirySlack);
        return token;
    }

    private static async Task<(string Token, TimeSpan Lifetime)> ReadTokenAsync(
        HttpResponseMessage response, string registry, object target, CancellationToken cancellationToken)
    {
        try
        {
            byte[] body = await response.Content.ReadAsByteArrayAsync(cancellationToken)
                .ConfigureAwait(false);
            using JsonDocument document = JsonDocument.Parse(body);
            JsonElement root = document.RootElement;

            // The distribution spec names it token; OAuth2-minded services send access_token.
            string? token = Text(root, "token") ?? Text(root, "access_token");
            if (string.IsNullOrEmpty(token))
            {
                throw RegistryErrors.AuthFailed(registry, target, "its token service sent no token.");
            }

            TimeSpan lifetime = root.TryGetProperty("expires_in", out JsonElement expires)
                && expires.ValueKind == JsonValueKind.Number
                && expires.TryGetInt32(out int seconds) && seconds > 0
                ? TimeSpan.FromSeconds(seconds)
                : DefaultTokenLifetime;
            return (token, lifetime);
        }
        catch (JsonException e)
        {
            throw RegistryErrors.AuthFailed(registry, target,
                $"its token service sent no JSON ({e.Message}).");
        }
    }

    private static string? Text(JsonElement root, string name) =>
        root.ValueKind == JsonValueKind.Object && root.TryGetProperty(name, out JsonElement value)
        && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static string TokenKey(string registry, string? scope) =>
        $"{registry.ToLowerInvariant()} {scope}";

    private static AuthenticationHeaderValue BasicHeader(RegistryCredential credential) =>
        new("Basic", Convert.ToBase64String(
            Encoding.UTF8.GetBytes($"{credential.Username}:{credential.Password}")));
}
