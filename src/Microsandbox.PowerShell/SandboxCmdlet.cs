using System.Collections;
using System.Collections.Concurrent;
using System.Management.Automation;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.PowerShell;

/// <summary>
/// What every Microsandbox cmdlet shares: the engine, cancellation from Ctrl+C, engine messages
/// written from the pipeline thread, and errors with stable ids whose target is the real object.
/// </summary>
public abstract class SandboxCmdlet : PSCmdlet, IDisposable
{
    private readonly CancellationTokenSource _cancellation = new();
    private SandboxEngine? _engine;

    /// <summary>The engine on the home named by <c>MSB_HOME</c>.</summary>
    protected SandboxEngine Engine => _engine ??= new SandboxEngine(SandboxHome.FromEnvironment());

    /// <summary>Cancelled when the user presses Ctrl+C.</summary>
    protected CancellationToken Cancellation => _cancellation.Token;

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Releases what the cmdlet holds. PowerShell disposes a cmdlet on its pipeline thread when the
    /// pipeline ends, stopped or not, so a cmdlet can release here what that thread still uses.
    /// </summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            _cancellation.Dispose();
        }
    }

    /// <inheritdoc/>
    protected override void StopProcessing() => _cancellation.Cancel();

    /// <summary>Cancels the engine operations under way, as Ctrl+C does.</summary>
    protected void CancelOperations() => _cancellation.Cancel();

    /// <summary>
    /// Runs an engine operation on the thread pool while this (the pipeline) thread writes its
    /// messages, since only the pipeline thread may write to PowerShell's streams.
    /// </summary>
    protected T Run<T>(Func<IProgress<SandboxMessage>, CancellationToken, Task<T>> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return RunWithLayers((messages, _, token) => operation(messages, token), _ => { });
    }

    /// <summary>
    /// Runs an engine operation that also reports layer downloads; <paramref name="onLayer"/> gets
    /// each report on this (the pipeline) thread, so it may call <c>WriteProgress</c>.
    /// </summary>
    protected T RunWithLayers<T>(
        Func<IProgress<SandboxMessage>, IProgress<LayerProgress>, CancellationToken, Task<T>> operation,
        Action<LayerProgress> onLayer)
    {
        ArgumentNullException.ThrowIfNull(operation);
        ArgumentNullException.ThrowIfNull(onLayer);
        using var queue = new BlockingCollection<object>();
        Task<T> task = Task.Run(async () =>
        {
            try
            {
                return await operation(new QueueProgress<SandboxMessage>(queue),
                    new QueueProgress<LayerProgress>(queue), Cancellation).ConfigureAwait(false);
            }
            finally
            {
                queue.CompleteAdding();
            }
        });
        try
        {
            foreach (object item in queue.GetConsumingEnumerable())
            {
                if (item is SandboxMessage message)
                {
                    WriteMessage(message);
                }
                else
                {
                    onLayer((LayerProgress)item);
                }
            }
        }
        catch
        {
            // A write that failed (the pipeline stopping) ends the operation before the queue goes.
            _cancellation.Cancel();
            ((IAsyncResult)task).AsyncWaitHandle.WaitOne();
            throw;
        }

        return task.GetAwaiter().GetResult();
    }

    /// <summary>Writes an engine message to the matching stream.</summary>
    protected void WriteMessage(SandboxMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        switch (message.Level)
        {
            case SandboxMessageLevel.Warning:
                WriteWarning(message.Text);
                break;
            case SandboxMessageLevel.Verbose:
                WriteVerbose(message.Text);
                break;
            default:
                WriteDebug(message.Text);
                break;
        }
    }

    /// <summary>The error record for an engine failure: its id, category and target.</summary>
    protected internal static ErrorRecord ToErrorRecord(SandboxException exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        var record = new ErrorRecord(exception, exception.ErrorId, Category(exception.Kind), exception.Target);
        string message = exception.Detail switch
        {
            null => exception.Message,
            "" => $"{exception.Message}{Environment.NewLine}Guest console: empty (the kernel printed nothing yet).",
            string detail => $"{exception.Message}{Environment.NewLine}Guest console (last lines):" +
                $"{Environment.NewLine}{detail}",
        };
        record.ErrorDetails = new ErrorDetails(message) { RecommendedAction = exception.Hint };
        return record;
    }

    /// <summary>
    /// ShouldProcess for a destructive action whose -Force skips the prompt: with
    /// <paramref name="force"/>, the action goes ahead unasked unless -Confirm or -WhatIf is given
    /// on this call, or a caller's dry run is in effect ($WhatIfPreference, a function called with
    /// -WhatIf), which is still honoured, so a dry run never destroys anything.
    /// </summary>
    protected bool ShouldProcessUnlessForced(bool force, string target, string action)
    {
        bool asked = MyInvocation.BoundParameters.ContainsKey("Confirm")
            || MyInvocation.BoundParameters.ContainsKey("WhatIf");
        bool dryRun = LanguagePrimitives.IsTrue(SessionState.PSVariable.GetValue("WhatIfPreference"));
        return (force && !asked && !dryRun) || ShouldProcess(target, action);
    }

    /// <summary>Writes a non-terminating error for one failed item.</summary>
    protected void WriteSandboxError(SandboxException exception) => WriteError(ToErrorRecord(exception));

    /// <summary>Ends the cmdlet with a terminating error, for failures where nothing can proceed.</summary>
    protected void ThrowSandboxError(SandboxException exception) => ThrowTerminatingError(ToErrorRecord(exception));

    /// <summary>Converts a hashtable of strings (environment, labels) into a dictionary.</summary>
    protected static Dictionary<string, string> ToDictionary(IDictionary? table)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (table is null)
        {
            return result;
        }

        foreach (DictionaryEntry entry in table)
        {
            result[entry.Key.ToString() ?? ""] = entry.Value?.ToString() ?? "";
        }

        return result;
    }

    /// <summary>
    /// Sandboxes for names that may hold wildcards, matched case-sensitively as the names are
    /// stored (like Linux file names). A plain name that matches nothing is a
    /// non-terminating <c>SandboxNotFound</c>, as <c>Get-Process -Name</c> does.
    /// </summary>
    protected IEnumerable<Sandbox> ResolveNames(IEnumerable<string> names, IReadOnlyList<Sandbox>? all = null)
    {
        ArgumentNullException.ThrowIfNull(names);
        all ??= Engine.List();
        foreach (string name in names)
        {
            if (WildcardPattern.ContainsWildcardCharacters(name))
            {
                var pattern = new WildcardPattern(name, WildcardOptions.None);
                foreach (Sandbox match in all.Where(s => pattern.IsMatch(s.Name)))
                {
                    yield return match;
                }

                continue;
            }

            Sandbox? found = all.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.Ordinal));
            if (found is null)
            {
                WriteSandboxError(new SandboxException("SandboxNotFound", SandboxErrorKind.NotFound,
                    $"No sandbox named '{name}' exists.", name));
                continue;
            }

            yield return found;
        }
    }

    /// <summary>
    /// Cached images for references that may hold wildcards, matched against the whole canonical
    /// reference ignoring case (registries keep repository names lowercase). A plain reference is
    /// canonicalized first (<c>python</c> is <c>docker.io/library/python:latest</c>); one that
    /// matches nothing is a non-terminating <c>ImageNotFound</c>.
    /// </summary>
    protected IEnumerable<SandboxImageInfo> ResolveImages(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        IReadOnlyList<SandboxImageInfo> all = Engine.Images.List();
        foreach (string name in names)
        {
            if (WildcardPattern.ContainsWildcardCharacters(name))
            {
                var pattern = new WildcardPattern(name, WildcardOptions.IgnoreCase);
                foreach (SandboxImageInfo match in all.Where(i => pattern.IsMatch(i.Reference)))
                {
                    yield return match;
                }

                continue;
            }

            string reference = ImageStore.CanonicalReference(name);
            SandboxImageInfo? found = all.FirstOrDefault(i => i.Reference == reference);
            if (found is null)
            {
                WriteSandboxError(new SandboxException("ImageNotFound", SandboxErrorKind.NotFound,
                    $"The image {reference} is not in the cache.", reference));
                continue;
            }

            yield return found;
        }
    }

    /// <summary>Sandboxes carrying every label in the selector; a malformed term ends the cmdlet.</summary>
    protected IReadOnlyList<Sandbox> ResolveLabels(IEnumerable<string> selector)
    {
        ArgumentNullException.ThrowIfNull(selector);
        IReadOnlyList<LabelSelector> terms = [];
        try
        {
            terms = SandboxRules.ParseSelectors(selector);
        }
        catch (SandboxException ex)
        {
            ThrowSandboxError(ex);
        }

        return Engine.List(terms);
    }

    private static ErrorCategory Category(SandboxErrorKind kind) => kind switch
    {
        SandboxErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
        SandboxErrorKind.NotFound => ErrorCategory.ObjectNotFound,
        SandboxErrorKind.AlreadyExists => ErrorCategory.ResourceExists,
        SandboxErrorKind.InvalidOperation => ErrorCategory.InvalidOperation,
        SandboxErrorKind.NotInstalled => ErrorCategory.NotInstalled,
        SandboxErrorKind.Timeout => ErrorCategory.OperationTimeout,
        SandboxErrorKind.ResourceUnavailable => ErrorCategory.ResourceUnavailable,
        SandboxErrorKind.InvalidResult => ErrorCategory.InvalidResult,
        SandboxErrorKind.PermissionDenied => ErrorCategory.PermissionDenied,
        SandboxErrorKind.InvalidData => ErrorCategory.InvalidData,
        _ => ErrorCategory.DeviceError,
    };

    /// <summary>
    /// Reports into the queue the pipeline thread empties. A report that comes after its operation
    /// has ended has nobody left to read it and is dropped.
    /// </summary>
    private protected sealed class QueueProgress<TReport>(BlockingCollection<object> queue) : IProgress<TReport>
        where TReport : notnull
    {
        public void Report(TReport value)
        {
            try
            {
                queue.Add(value);
            }
            catch (InvalidOperationException)
            {
                // Adding was completed: the operation is over.
            }
        }
    }
}
