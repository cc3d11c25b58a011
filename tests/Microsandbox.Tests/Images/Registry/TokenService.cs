using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// A token service of the kind the distribution registry's token auth trusts, on loopback: it issues
/// ES256 JWTs carrying their certificate chain (x5c), signed by a key whose self-signed certificate
/// the registry is configured with. Anonymous callers get pull on <c>public/*</c>; a user with the
/// right password gets whatever they ask; a wrong password gets 401.
/// </summary>
internal sealed class TokenService : IDisposable
{
    public const string Issuer = "msb-test-issuer";
    public const string ServiceName = "msb-test-registry";

    private readonly HttpListener _listener = new();
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly X509Certificate2 _certificate;
    private readonly IReadOnlyDictionary<string, string> _users;
    private readonly Task _serving;

    public TokenService(string folder, IReadOnlyDictionary<string, string> users)
    {
        _users = users;
        var request = new CertificateRequest("CN=msb-test-token-signer", _key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        DateTimeOffset now = DateTimeOffset.UtcNow;
        _certificate = request.CreateSelfSigned(now.AddDays(-1), now.AddDays(1));
        CertificatePath = Path.Join(folder, "token-signer.pem");
        File.WriteAllText(CertificatePath, _certificate.ExportCertificatePem());
        Port = RegistryServer.FreePort();
        _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
        _listener.Start();
        _serving = Task.Run(ServeAsync);
    }

    public int Port { get; }

    public string Realm => $"http://127.0.0.1:{Port}/token";

    /// <summary>The PEM the registry's <c>rootcertbundle</c> names.</summary>
    public string CertificatePath { get; }

    /// <summary>Answer with <c>access_token</c>, not <c>token</c>, as OAuth-minded services do.</summary>
    public bool UseAccessTokenField { get; set; }

    /// <summary>Each token request: the user it came from (or "") and the scopes asked for.</summary>
    public ConcurrentQueue<(string User, string Scopes)> Requests { get; } = new();

    /// <summary>The registry config's <c>auth:</c> section that trusts this service.</summary>
    public string RegistryAuthYaml =>
        $"  token:\n    realm: {Realm}\n    service: {ServiceName}\n    issuer: {Issuer}\n"
        + $"    rootcertbundle: {CertificatePath}\n";

    public void Dispose()
    {
        // Close alone: after Stop, the managed HttpListener's Close looks its port up again and
        // binds it anew, which fails when another test has taken that port meanwhile.
        _listener.Close();
        try
        {
            _serving.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
            // The loop ends by its listener failing; that is how it stops.
        }

        _certificate.Dispose();
        _key.Dispose();
    }

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException
                or InvalidOperationException)
            {
                return;
            }

            try
            {
                Answer(context);
            }
            finally
            {
                context.Response.Close();
            }
        }
    }

    private void Answer(HttpListenerContext context)
    {
        string user = "";
        string? header = context.Request.Headers["Authorization"];
        if (header is not null && header.StartsWith("Basic ", StringComparison.Ordinal))
        {
            string pair = Encoding.UTF8.GetString(Convert.FromBase64String(header["Basic ".Length..]));
            int colon = pair.IndexOf(':', StringComparison.Ordinal);
            user = pair[..colon];
            if (!_users.TryGetValue(user, out string? password) || password != pair[(colon + 1)..])
            {
                Requests.Enqueue((user, "refused"));
                context.Response.StatusCode = 401;
                return;
            }
        }

        string[] scopes = context.Request.QueryString.GetValues("scope") ?? [];
        Requests.Enqueue((user, string.Join(" ", scopes)));
        var access = new JsonArray();
        foreach (string scope in scopes)
        {
            // repository:name:actions; names hold no ':' here.
            string[] parts = scope.Split(':');
            string[] wanted = parts[2].Split(',');
            string[] granted = user.Length > 0 ? wanted
                : parts[1].StartsWith("public/", StringComparison.Ordinal)
                    ? [.. wanted.Where(a => a == "pull")]
                    : [];
            access.Add(new JsonObject
            {
                ["type"] = parts[0],
                ["name"] = parts[1],
                ["actions"] = new JsonArray([.. granted.Select(a => (JsonNode)a)]),
            });
        }

        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var claims = new JsonObject
        {
            ["iss"] = Issuer,
            ["sub"] = user,
            ["aud"] = ServiceName,
            ["exp"] = now + 300,
            ["nbf"] = now - 10,
            ["iat"] = now,
            ["jti"] = Guid.NewGuid().ToString("N"),
            ["access"] = access,
        };
        var jwtHeader = new JsonObject
        {
            ["typ"] = "JWT",
            ["alg"] = "ES256",
            ["x5c"] = new JsonArray(Convert.ToBase64String(_certificate.RawData)),
        };
        string signed = Base64Url(Encoding.UTF8.GetBytes(jwtHeader.ToJsonString())) + "."
            + Base64Url(Encoding.UTF8.GetBytes(claims.ToJsonString()));
        byte[] signature = _key.SignData(Encoding.ASCII.GetBytes(signed), HashAlgorithmName.SHA256);
        string token = signed + "." + Base64Url(signature);
        var body = new JsonObject
        {
            [UseAccessTokenField ? "access_token" : "token"] = token,
            ["expires_in"] = 300,
        };
        byte[] json = Encoding.UTF8.GetBytes(body.ToJsonString());
        context.Response.ContentType = "application/json";
        context.Response.OutputStream.Write(json);
    }

    private static string Base64Url(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
