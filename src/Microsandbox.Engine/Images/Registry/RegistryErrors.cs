using System.Net;
using System.Text.Json;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// The failures a registry conversation ends in, each with its stable id. Auth refusals are
/// <see cref="SandboxErrorKind.InvalidOperation"/> (the request is not allowed as things stand);
/// network and server trouble is <see cref="SandboxErrorKind.ResourceUnavailable"/>.
/// </summary>
internal static class RegistryErrors
{
    public static SandboxException Unreachable(string registry, object target, Exception inner) =>
        new("RegistryUnreachable", SandboxErrorKind.ResourceUnavailable,
            $"The registry {registry} cannot be reached: {Innermost(inner).Message}", target, inner)
        {
            Hint = "Check the registry name, the network and any proxy; for a registry without TLS, "
                + "name it among the client's insecure registries.",
        };

    public static SandboxException TimedOut(string registry, object target, Exception inner) =>
        new("RegistryUnreachable", SandboxErrorKind.ResourceUnavailable,
            $"The registry {registry} did not answer in time.", target, inner);

    public static SandboxException AuthFailed(string registry, object target, string why) =>
        new("RegistryAuthFailed", SandboxErrorKind.InvalidOperation,
            $"The registry {registry} refused access to {target}: {why}", target)
        {
            Hint = $"Log in with 'docker login {registry}' (credentials are read from the Docker config "
                + "file), or check that the image exists.",
        };

    public static SandboxException ImageNotFound(object target, string detail) =>
        new("ImageNotFound", SandboxErrorKind.NotFound, $"The image {target} does not exist: {detail}",
            target);

    public static SandboxException BlobNotFound(object target, string digest) =>
        new("BlobNotFound", SandboxErrorKind.NotFound,
            $"The registry lacks the blob {digest} that the image {target} refers to.", target);

    public static SandboxException Unexpected(
        string registry, object target, HttpStatusCode status, string detail) =>
        new("RegistryError", SandboxErrorKind.ResourceUnavailable,
            $"The registry {registry} answered {(int)status} {status} for {target}{detail}", target);

    public static SandboxException Unsupported(object target, string why) =>
        new("UnsupportedManifest", SandboxErrorKind.InvalidArgument,
            $"The image {target} cannot be used: {why}.", target);

    public static SandboxException TooLarge(object target, string what, long limit) =>
        new("RegistryError", SandboxErrorKind.ResourceUnavailable,
            $"The {what} of {target} is larger than {limit} bytes, which no sane image needs.", target);

    /// <summary>
    /// The registry's own explanation of a failed request: the codes and messages of the
    /// distribution spec's error body, when it sent one.
    /// </summary>
    public static async Task<string> ReadErrorDetailAsync(
        HttpResponseMessage response, CancellationToken cancellationToken)
    {
        try
        {
            string body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            if (body.Length is 0 or > 65536)
            {
                return "";
            }

            using JsonDocument document = JsonDocument.Parse(body);
            if (!document.RootElement.TryGetProperty("errors", out JsonElement errors)
                || errors.ValueKind != JsonValueKind.Array)
            {
                return "";
            }

            var parts = errors.EnumerateArray()
                .Select(e => string.Join(" ",
                    new[] { Text(e, "code"), Text(e, "message") }.Where(s => !string.IsNullOrEmpty(s))))
                .Where(s => s.Length > 0);
            string joined = string.Join("; ", parts);
            return joined.Length == 0 ? "" : $" ({joined})";
        }
        catch (Exception e) when (e is JsonException or HttpRequestException or IOException)
        {
            return "";
        }
    }

    private static string? Text(JsonElement element, string name) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out JsonElement value)
        && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
        {
            e = e.InnerException;
        }

        return e;
    }
}
