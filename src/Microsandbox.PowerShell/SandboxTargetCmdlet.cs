using System.Collections.Concurrent;
using System.Management.Automation;
using Microsandbox.Engine;

namespace Microsandbox.PowerShell;

/// <summary>
/// Base of the cmdlets that act on existing sandboxes, chosen by name (wildcards), by label
/// selector, or by sandbox objects from the pipeline.
/// </summary>
public abstract class SandboxTargetCmdlet : SandboxCmdlet
{
    /// <summary>Parameter set for names.</summary>
    protected const string ByName = "Name";

    /// <summary>Parameter set for pipeline objects.</summary>
    protected const string ByInputObject = "InputObject";

    /// <summary>Parameter set for label selectors.</summary>
    protected const string ByLabel = "Label";

    /// <summary>
    /// <para type="description">Names of the sandboxes. Wildcards are allowed.</para>
    /// </summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(SandboxNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>
    /// <para type="description">Sandbox objects, as Get-Sandbox and New-Sandbox emit them.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByInputObject, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Sandbox[] InputObject { get; set; } = [];

    /// <summary>
    /// <para type="description">Label selector: key=value or key terms; a sandbox must carry all of them.</para>
    /// </summary>
    [Parameter(Mandatory = true, ParameterSetName = ByLabel)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SandboxLabelCompleter))]
    public string[] Label { get; set; } = [];

    /// <summary>The sandboxes this invocation names, once each.</summary>
    protected IReadOnlyList<Sandbox> Targets()
    {
        try
        {
            IEnumerable<Sandbox> found = ParameterSetName switch
            {
                ByInputObject => InputObject,
                ByLabel => ResolveLabels(Label),
                _ => ResolveNames(Name),
            };
            var seen = new HashSet<string>(StringComparer.Ordinal);
            return found.Where(s => seen.Add(s.Name)).ToList();
        }
        catch (SandboxException ex)
        {
            // Nothing can be resolved when the state store itself fails.
            ThrowSandboxError(ex);
            throw;
        }
    }

    /// <summary>How many sandboxes a bulk operation works on at once.</summary>
    protected virtual int BulkLimit => 8;

    private readonly List<Sandbox> _queued = [];
    private readonly HashSet<string> _queuedNames = new(StringComparer.Ordinal);

    /// <summary>
    /// Keeps a sandbox for <see cref="RunQueued"/>, once however often it arrives, so that a whole
    /// pipeline's sandboxes are acted on together.
    /// </summary>
    protected void Enqueue(Sandbox sandbox)
    {
        ArgumentNullException.ThrowIfNull(sandbox);
        if (_queuedNames.Add(sandbox.Name))
        {
            _queued.Add(sandbox);
        }
    }

    /// <summary>Queues every sandbox this invocation names that the user agrees to <paramref name="action"/>.</summary>
    protected void EnqueueTargets(string action)
    {
        foreach (Sandbox target in Targets())
        {
            if (ShouldProcess(target.Name, action))
            {
                Enqueue(target);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="operation"/> for every queued sandbox, up to <see cref="BulkLimit"/> at
    /// once, while this (the pipeline) thread writes their messages, results and errors as they
    /// come: each failure is a non-terminating error of its own and the others go on. A result of
    /// null writes nothing.
    /// </summary>
    protected void RunQueued(Func<Sandbox, IProgress<SandboxMessage>, CancellationToken, Task<object?>> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        if (_queued.Count == 0)
        {
            return;
        }

        using var events = new BlockingCollection<object>();
        using var slots = new SemaphoreSlim(BulkLimit);
        var progress = new QueueProgress<SandboxMessage>(events);
        Task all = Task.WhenAll(_queued.Select(sandbox => Task.Run(async () =>
        {
            await slots.WaitAsync(Cancellation).ConfigureAwait(false);
            try
            {
                if (await operation(sandbox, progress, Cancellation).ConfigureAwait(false) is { } result)
                {
                    events.Add(new Outcome(result));
                }
            }
            catch (SandboxException ex)
            {
                events.Add(ex);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // A host failure the engine does not name (a folder that cannot be deleted, a
                // process that cannot be killed) is still this sandbox's alone: the others go on.
                events.Add(new SandboxException("SandboxOperationFailed", SandboxErrorKind.DeviceError,
                    $"The operation on sandbox '{sandbox.Name}' failed: {ex.Message}", sandbox.Name, ex));
            }
            finally
            {
                slots.Release();
            }
        })));
        _ = all.ContinueWith(_ => events.CompleteAdding(), TaskScheduler.Default);

        // One boot after another warns of emulation alike; a bulk start says so once.
        var warned = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            foreach (object item in events.GetConsumingEnumerable())
            {
                switch (item)
                {
                    case SandboxMessage { Level: SandboxMessageLevel.Warning } warning when !warned.Add(warning.Text):
                        break;
                    case SandboxMessage message:
                        WriteMessage(message);
                        break;
                    case SandboxException error:
                        WriteSandboxError(error);
                        break;
                    case Outcome outcome:
                        WriteObject(outcome.Value);
                        break;
                }
            }
        }
        catch
        {
            // The pipeline is stopping: the operations still under way are cancelled and awaited.
            StopQueued(all);
            throw;
        }

        try
        {
            all.GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            // Ctrl+C: PowerShell stops the pipeline itself.
        }
    }

    private void StopQueued(Task all)
    {
        CancelOperations();
        try
        {
            all.Wait();
        }
        catch (AggregateException)
        {
            // Cancelled operations end with exceptions nobody is left to read.
        }
    }

    private sealed record Outcome(object Value);
}
