using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Completes image references from the layer cache. A word matches the start of the canonical
/// reference (127.0.0.1:5000/python:latest) or of its short form, the part after the registry
/// host (python:latest; for Docker Hub also without library/); the completion is always the
/// canonical reference, since a short form alone would name a Docker Hub image.
/// </summary>
public sealed class SandboxImageCompleter : IArgumentCompleter
{
    /// <inheritdoc/>
    public IEnumerable<CompletionResult> CompleteArgument(
        string commandName, string parameterName, string wordToComplete, CommandAst commandAst,
        IDictionary fakeBoundParameters)
    {
        string word = CompletionText.Unquote(wordToComplete);
        IReadOnlyList<SandboxImageInfo> cached = CompletionSource.Images();

        var results = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (SandboxImageInfo image in cached)
        {
            if (ShortForms(image.Reference).Any(f => f.StartsWith(word, StringComparison.OrdinalIgnoreCase)))
            {
                results[image.Reference] = $"{image.Reference} ({image.Digest})";
            }
        }

        // New-Sandbox's -Image also takes the built-in image, which is never in the cache, and
        // host folders and disk image files, which a completer of its own would otherwise hide.
        bool takesSources = parameterName == "Image";
        if (takesSources && SandboxOptions.DefaultImage.StartsWith(word, StringComparison.OrdinalIgnoreCase))
        {
            results[SandboxOptions.DefaultImage] = "The built-in BusyBox image";
        }

        List<CompletionResult> found = [.. results.Select(r => new CompletionResult(
            CompletionText.Quote(r.Key), r.Key, CompletionResultType.ParameterValue, r.Value))];
        if (takesSources)
        {
            found.AddRange(CompletionCompleters.CompleteFilename(wordToComplete ?? ""));
        }

        return found;
    }

    private static IEnumerable<string> ShortForms(string reference)
    {
        yield return reference;
        int slash = reference.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0)
        {
            yield break;
        }

        string path = reference[(slash + 1)..];
        yield return path;
        if (reference.StartsWith("docker.io/library/", StringComparison.Ordinal))
        {
            yield return path["library/".Length..];
        }
    }
}
